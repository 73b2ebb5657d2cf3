"""Packet captures of chosen NICs and links, written into the run folder as pcap files.

``[telemetry] capture = ["h1", "t0r0-s1"]``: a server captures each of its NICs
(``captures/h1-eth0.pcap``, ...), a link its lower switch end, both directions
(``captures/t0r0-s1.pcap``). One tcpdump per interface, started in that
interface's namespace before the traffic and stopped (SIGINT, by PID) after it.
UDP port 4791 is RoCEv2's, so Wireshark and tshark decode the frames as RoCEv2
(BTH opcode, destination QP, PSN) without being told.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from fabric.net.sh import FabricError

#: Bytes kept of each frame: every header up to and past the BTH, not the payload.
SNAPLEN = 256
START_TIMEOUT_S = 5.0
#: Size of a pcap file's global header: tcpdump has opened its file once it is there.
PCAP_HEADER_BYTES = 24


def capture_points(net: Any, names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(file stem, interface, namespace) of every capture a spec names."""
    topology = net.topology
    points = []
    for name in names:
        if name in net.plan.netns:
            points += [(f"{name}-{nic.intf}", nic.intf, net.netns(name))
                       for nic in topology.nics_of(name)]
            continue
        link = topology.links[topology.find_link(name)]
        end = next(e for e in link.ends() if e.node not in net.plan.netns)
        intf, netns = net.plan.intf_netns(end.node, end.port)
        points.append((name.replace("#", "_"), intf, netns))
    return points


class Captures:
    """tcpdump on each capture point while the traffic runs (a context manager)."""

    def __init__(self, net: Any, names: Iterable[str], out_dir: Path) -> None:
        self.points = capture_points(net, names)
        self.dir = Path(out_dir) / "captures"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Captures":
        if not self.points:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            for stem, intf, netns in self.points:
                path = self.dir / f"{stem}.pcap"
                self.procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", netns, "tcpdump", "-i", intf, "-s", str(SNAPLEN),
                     "-U", "-n", "-q", "-Z", "root", "-w", str(path)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE))
            self._wait_started()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = [(self.dir / f"{stem}.pcap", proc)
                   for (stem, _, _), proc in zip(self.points, self.procs)]
        while pending:
            for path, proc in list(pending):
                if proc.poll() is not None:
                    raise FabricError(f"tcpdump for {path.name} exited: "
                                      f"{proc.stderr.read().decode(errors='replace').strip()}")
                if path.exists() and path.stat().st_size >= PCAP_HEADER_BYTES:
                    pending.remove((path, proc))
            if pending and time.monotonic() > deadline:
                raise FabricError(f"tcpdump did not start within {START_TIMEOUT_S:.0f} s: "
                                  + ", ".join(path.name for path, _ in pending))
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGINT every tcpdump we started (it flushes and closes its file), then reap."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
