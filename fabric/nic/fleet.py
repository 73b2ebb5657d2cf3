"""The NIC agents of a run: start one per server, load collectives, wait, collect records."""

from __future__ import annotations

import csv
import logging
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable
from pathlib import Path

from fabric.net.network import Network
from fabric.net.procs import stop_children
from fabric.net.sh import FabricError, batch
from fabric.nic.client import AgentClient, wait_socket
from topologies.hops import SwitchHops

log = logging.getLogger(__name__)

START_DELAY_S = 0.3
START_JITTER_S = 0.002
#: In announce mode a round starts once every QP has its grant, or after this long (the
#: QPs still waiting then fall back to sending ungranted, fabric/nic/flows.py).
GRANT_WAIT_S = 5.0
GRANT_POLL_S = 0.02
#: How long a dead agent's process may take to be seen exited after its socket broke.
AGENT_EXIT_WAIT_S = 1.0
POLL_S = 0.1
#: Status polls cost the harness and every agent a little: 64 agents are polled every 0.32 s.
POLL_S_PER_AGENT = 0.005
_CSV_KINDS = ("messages", "deliveries", "delays")


class RunTimedOut(FabricError):
    """A round did not deliver all its messages within the run's time limit."""


@dataclass(frozen=True)
class NicSettings:
    """How every NIC agent of a run behaves (plain data: the fleet knows no spec objects)."""

    transport: str          # "roce" or "tcp"
    window_packets: int
    rto_ms: float
    ack_every: int
    delay_sample_every: int
    salt: int               # UDP source-port hash salt and start-jitter seed
    announce: bool          # announce flows in-band to the fabric manager
    datapath: str = "compiled"  # the NIC's per-packet work: "compiled" or "python"
    dcqcn: dict | None = None   # DCQCN at the NICs (fabric/nic/dcqcn.py fields), or None
    swift: dict | None = None   # Swift at the NICs (fabric/nic/swift.py fields), or None


class AgentFleet:
    """One emulated RDMA NIC agent per server of a live fabric."""

    def __init__(self, net: Network, settings: NicSettings, out_dir: Path) -> None:
        self.net = net
        self.settings = settings
        self.out_dir = out_dir
        self.agent_dir = out_dir / "agents"
        self.procs: dict[str, subprocess.Popen] = {}
        self.clients: dict[str, AgentClient] = {}
        self.neighbours: set[tuple[str, str, int]] = set()
        self.rounds = 0
        self.hops = SwitchHops(net.topology)

    def start(self) -> None:
        """Start and configure an agent in every server's namespace."""
        self.agent_dir.mkdir(parents=True, exist_ok=True)
        for server in self.net.topology.servers():
            sock = self.agent_dir / f"{server.name}.sock"
            sock.unlink(missing_ok=True)
            self.procs[server.name] = self.net.popen(
                server.name, [sys.executable, "-m", "fabric.nic.agent", "--server", server.name,
                              "--socket", str(sock), "--log",
                              str(self.agent_dir / f"{server.name}.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.agent_dir / f"{server.name}.stderr", "wb"))
        spec = self.net.topology.spec
        settings = self.settings
        for server, proc in self.procs.items():
            sock = self.agent_dir / f"{server}.sock"
            if not wait_socket(sock, timeout=20):
                self._check_alive()
                raise FabricError(f"agent {server}: no control socket after 20 s")
            client = AgentClient(sock)
            self._ask(server, lambda: client.configure(
                nics=[{"rail": nic.rail, "ip": nic.ip} for nic in self.net.topology.nics_of(server)],
                mtu=spec.mtu, line_mbps=spec.nic_mbps, window_packets=settings.window_packets,
                rto_ms=settings.rto_ms, qps_per_connection=1, salt=settings.salt,
                ack_every=settings.ack_every, delay_sample_every=settings.delay_sample_every,
                out_dir=str(self.agent_dir), transport=settings.transport, announce=settings.announce,
                datapath=settings.datapath, dcqcn=settings.dcqcn, swift=settings.swift))
            self.clients[server] = client

    def _cross_rail_neighbours(self, rows: list[dict]) -> None:
        """Permanent neighbour entries for messages that leave their rail (no ARP storm)."""
        macs = {nic.ip: nic.mac for nic in self.net.topology.nics}
        lines: dict[str, list[str]] = {}
        for row in rows:
            key = (row["src"], row["dst_ip"], row["src_rail"])
            if row["src_rail"] != row["dst_rail"] and key not in self.neighbours:
                self.neighbours.add(key)
                lines.setdefault(row["src"], []).append(
                    f"neigh replace {row['dst_ip']} lladdr {macs[row['dst_ip']]} "
                    f"dev eth{row['src_rail']} nud permanent")
        for server, server_lines in lines.items():
            batch("ip", server_lines, netns=self.net.netns(server))

    def run_round(self, rows: list[dict], timeout_s: float,
                  starting: Callable[[int], None] | None = None) -> None:
        """Load one round of transfers (transfers.json rows) into the agents, start it
        everywhere at once, and wait until every message is delivered; ``starting`` is
        told the round's start time (time.time_ns) before the agents are."""
        self._cross_rail_neighbours(rows)
        for server, client in self.clients.items():
            send = [{"id": r["id"], "src_rail": r["src_rail"], "dst_ip": r["dst_ip"],
                     "size": r["size"], "qps": r.get("qps", 1), "after": r["after"],
                     "hops": self.hops.between(r["src_ip"], r["dst_ip"])}
                    for r in rows if r["src"] == server]
            expect = [{"id": r["id"], "dst_rail": r["dst_rail"], "size": r["size"]}
                      for r in rows if r["dst"] == server]
            self._ask(server, client.load, send, expect)
        if self.settings.announce:
            self._wait_for_grants()
        start_ns = time.time_ns() + int(START_DELAY_S * 1e9)
        if starting:
            starting(start_ns)
        self.rounds += 1
        # Seeded start jitter per server: repetitions sample timing luck, not only hashes.
        jitter = random.Random(self.settings.salt * 100_003 + self.rounds)
        for server, client in self.clients.items():
            self._ask(server, client.start, start_ns + int(jitter.uniform(0, START_JITTER_S) * 1e9))
        self._wait(len(rows), timeout_s)

    def _wait_for_grants(self) -> None:
        """Announce mode: hosts and network agree on rates before the round starts; wait
        until no QP is held for its grant (at most GRANT_WAIT_S)."""
        controller = self.net.controller
        if controller is not None and controller.killed:
            return  # nobody grants: each QP falls back to its hashed path after its timeout
        deadline = time.monotonic() + GRANT_WAIT_S
        while time.monotonic() < deadline:
            held = sum(self._status(server, client).get("held", 0)
                       for server, client in self.clients.items())
            if not held:
                return
            time.sleep(GRANT_POLL_S)
        log.warning("round starts with %d QP(s) still waiting for a grant after %.0f s",
                    held, GRANT_WAIT_S)

    def _wait(self, total: int, timeout_s: float) -> None:
        """Poll the agents until every one is done with the round (a done agent stays done:
        it is not asked again), at most every POLL_S, less often for large fleets."""
        deadline = time.monotonic() + timeout_s
        interval = max(POLL_S, POLL_S_PER_AGENT * len(self.clients))
        statuses: dict[str, dict] = {}
        while True:
            self._check_alive()
            self.net.controller and self.net.controller.check_alive()
            for server, client in self.clients.items():
                if not statuses.get(server, {}).get("done"):
                    statuses[server] = self._status(server, client)
            if all(status["done"] for status in statuses.values()):
                return
            if time.monotonic() > deadline:
                # The agents count over the whole run (every round loaded so far).
                received = sum(status["received"] for status in statuses.values())
                expected = sum(status["expect_total"] for status in statuses.values())
                raise RunTimedOut(f"run timed out after {timeout_s:.0f} s: {received} of "
                                  f"{expected} messages delivered so far, this round's "
                                  f"{total} included (see {self.agent_dir})")
            time.sleep(interval)

    def _status(self, server: str, client: AgentClient) -> dict:
        """An agent's status (see `_ask`)."""
        return self._ask(server, client.status)

    def _ask(self, server: str, request: Callable[..., dict], *args: Any) -> dict:
        """One request to an agent; if it cannot answer because it died, say that it died
        (not that its socket broke)."""
        try:
            return request(*args)
        except (OSError, FabricError, ValueError):
            try:
                self.procs[server].wait(timeout=AGENT_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
            self._check_alive()
            raise

    def _check_alive(self) -> None:
        for server, proc in self.procs.items():
            if proc.poll() is not None:
                err = (self.agent_dir / f"{server}.stderr").read_text(errors="replace").strip()
                last = err.splitlines()[-1] if err else f"exit code {proc.returncode}"
                raise FabricError(f"agent {server} died: {last} "
                                  f"(log: {self.agent_dir / (server + '.log')})")

    def finish(self, quiesce_s: float = 0.5, tolerant: bool = False) -> dict[str, dict]:
        """Let late packets (duplicate ACKs) land, have every agent write its records,
        merge them into the run folder; returns the agents' counters. ``tolerant``: an
        agent that cannot answer (it died) is skipped with a warning, so a failed run
        keeps what the others recorded."""
        time.sleep(quiesce_s)
        counters = {}
        for server, client in self.clients.items():
            try:
                counters[server] = client.finish()
            except (OSError, FabricError, ValueError) as exc:
                if not tolerant:
                    raise
                log.warning("agent %s kept no records: %s", server, exc)
                counters[server] = {"counters": {}, "lost": str(exc)}
        for kind in _CSV_KINDS:
            _merge_csv(sorted(self.agent_dir.glob(f"*.{kind}.csv")), self.out_dir / f"{kind}.csv")
        return {server: reply.get("counters", reply) for server, reply in counters.items()}

    def stop(self) -> None:
        """Ask agents to quit, then end the processes we started (by PID)."""
        for client in self.clients.values():
            try:
                client.quit()
            except (OSError, FabricError, ValueError):
                pass
        stop_children(self.procs.values(), grace=5.0)


def _merge_csv(parts: list[Path], target: Path) -> None:
    """Concatenate CSV files that share a header."""
    with target.open("w", newline="") as out:
        writer = None
        for part in parts:
            with part.open(newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    continue
                if writer is None:
                    writer = csv.writer(out)
                    writer.writerow(header)
                writer.writerows(reader)
