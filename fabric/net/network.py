"""`Network(topology)`: a live, shaped, verified fabric as a context manager.

    with Network(topologies.load("rail-2tier-small")) as net:
        net.exec("h1", ["ping", "-c1", "10.0.1.1"])

Start: state file, the run's own OVS shards (fabric.net.shards: private
ovs-vswitchd instances, each in its namespace), server namespaces, veth
pairs, OVS bridges (one transaction per shard), shaping on both ends of every
link (after OVS attached the ports), read-back verification, controller
process (reached over a Unix socket), wait until every switch is configured.
Stop (also on error, Ctrl-C or SIGTERM via the CLI): exactly what was created.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from fabric.net import names, ovs, plumbing, shaping, shards
from fabric.net.cleanup import clean_run, list_netns
from fabric.net.controller_process import MARKER, ControllerProcess
from fabric.net.pfc.layout import plan_layout
from fabric.net.pfc.loop import PfcLoop
from fabric.net.sh import FabricError
from fabric.net.state import STATE_DIR, RunState, load_all
from topologies import Topology
from topologies.export import save

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class Network:
    """A live emulated fabric for one topology; use as a context manager."""

    def __init__(self, topology: Topology, algorithm: str | None = "ecmp",
                 run_dir: Path | None = None, progress: Progress | None = None,
                 stats_interval: float = 0.2, static_neighbors: bool = True,
                 controller_options: dict | None = None, ovs_shards: int | None = None,
                 ovs_allocator: str = "tcmalloc", ovs_pollgate: bool = True) -> None:
        self.topology = topology
        self.algorithm = algorithm
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="railcc-"))
        self.progress = progress or (lambda message: log.info("%s", message))
        self.stats_interval = stats_interval
        self.controller_options = dict(controller_options or {})
        self.static_neighbors = static_neighbors
        taken = {state.prefix for state in load_all()}
        taken |= {names.prefix_of_netns(ns) for ns in list_netns()}
        self.prefix = names.new_run_prefix(taken)
        ports = {switch.name: 0 for switch in topology.switches()}
        for link in topology.links:
            for end in link.ends():
                if end.node in ports:
                    ports[end.node] += 1
        count = min(ovs_shards or shards.auto_count(len(ports)), len(ports))
        self.shards = shards.plan_shards(self.prefix, count, STATE_DIR / self.prefix,
                                         ovs_allocator, ovs_pollgate)
        placed = shards.assign(ports, count)
        self.plan = plumbing.plan(topology, self.prefix,
                                  {switch: self.shards[i].netns for switch, i in placed.items()})
        self.shard_of = {switch: self.shards[i] for switch, i in placed.items()}
        self.state = RunState(self.prefix, os.getpid(), topology.name,
                              sorted([*self.plan.netns.values(), *(s.netns for s in self.shards)]),
                              sorted(self.plan.bridges.values()),
                              rundirs=[str(STATE_DIR / self.prefix)])
        self.controller: ControllerProcess | None = None
        self.pfc_layout = (plan_layout(topology, self.plan)
                           if topology.spec.flow_control == "pfc" else None)
        self.pfc: PfcLoop | None = None
        self.shapes = self._shapes()
        self.timings: dict[str, float] = {}
        self.datapath = ovs.datapath_type()

    # -- life cycle -------------------------------------------------------
    def __enter__(self) -> "Network":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Build, shape, verify and hand the fabric to its controller."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ovs.raise_socket_buffers()
        self.state.save()   # before anything exists, so a crash can be cleaned
        try:
            self._build()
        except BaseException:
            self.stop()
            raise

    def _build(self) -> None:
        self._step("ovs shards", shards.start_all, self.shards)
        self._step("namespaces", plumbing.create_namespaces, self.plan)
        self._step("links", plumbing.create_links, self.topology, self.plan)
        self._step("servers", plumbing.configure_servers, self.topology, self.plan,
                   self.static_neighbors)
        if self.algorithm:
            topo_json = save(self.topology, self.run_dir / "topology.json")
            self.controller = ControllerProcess(topo_json, self.algorithm, self.run_dir,
                                                stats_interval=self.stats_interval,
                                                options=self.controller_options,
                                                unix_sockets=[s.controller_socket
                                                              for s in self.shards])
            pid = self.controller.start()
            self.state.processes[str(pid)] = MARKER
            self.state.save()
        self._step("switches", self._add_bridges)
        self._step("shaping", shaping.apply, self.shapes)
        self._step("verify", shaping.verify, self.shapes)
        if self.controller:
            dpids = {switch.dpid for switch in self.topology.switches()}
            self._step("controller", self.controller.wait_ready, dpids)
        if self.pfc_layout:
            self._step("pfc", self._start_pfc)
        self.progress(f"fabric {self.topology.name} up as run {self.prefix} "
                      f"({self.datapath} datapath, {len(self.shards)} OVS shard(s), "
                      f"{sum(self.timings.values()):.2f} s)")

    def _add_bridges(self) -> None:
        """Each shard's bridges in one transaction (shards in parallel)."""
        specs = self._bridge_specs()

        def one(shard: shards.Shard) -> None:
            mine = [spec for switch, spec in specs.items() if self.shard_of[switch] is shard]
            target = f"unix:{shard.controller_socket}" if self.controller else None
            ovs.add_bridges(mine, self.prefix, target, self.datapath, db=shard.db)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, self.shards))

    def _start_pfc(self) -> None:
        queues: dict[str | None, set[str]] = {}
        for name in self.pfc_layout.limits:   # switch egress: name = interface
            queues.setdefault(self.pfc_layout.gates[name].netns, set()).add(name)
        self.pfc = PfcLoop(self.pfc_layout, queues, self.vswitchd_sockets())
        self.pfc.start()

    def vswitchd_sockets(self) -> list[Path]:
        """The unixctl socket of each shard's ovs-vswitchd (``ovs-appctl`` without a fork)."""
        return [shard.rundir / "ovs-vswitchd.ctl" for shard in self.shards]

    def stop(self, settle: bool = True) -> None:
        """Remove everything this run created (idempotent); ``settle``: wait for OVS too."""
        started = time.monotonic()
        if self.pfc:
            self.pfc.stop()
        if self.controller:
            self.controller.stop()
        if self.state.path.exists():
            clean_run(self.state, settle=settle)
        self.timings["teardown"] = time.monotonic() - started

    def _step(self, label: str, func: Callable, *args: object) -> None:
        started = time.monotonic()
        self.progress(f"{label} ...")
        func(*args)
        self.timings[label] = time.monotonic() - started

    # -- what the fabric is made of -----------------------------------------
    def _bridge_specs(self) -> dict[str, ovs.BridgeSpec]:
        specs = {}
        for switch in self.topology.switches():
            ports = sorted((intf, port) for (node, port), intf in self.plan.switch_intfs.items()
                           if node == switch.name)
            specs[switch.name] = ovs.BridgeSpec(self.plan.bridges[switch.name], switch.dpid,
                                                tuple(sorted(ports, key=lambda item: item[1])))
        return specs

    def _shapes(self) -> list[shaping.Shape]:
        mtu = self.topology.spec.mtu
        shapes = []
        for link in self.topology.links:
            for end in link.ends():
                if end.node in self.plan.netns:
                    intf, netns = end.intf, self.plan.netns[end.node]
                else:
                    intf, netns = self.plan.intf_netns(end.node, end.port)
                name = intf if end.node not in self.plan.netns else f"{end.node}:{intf}"
                gate = self.pfc_layout.gates[name].limit if self.pfc_layout else None
                shapes.append(shaping.Shape(intf, netns, link.mbps, link.buffer_bytes, mtu, gate))
        return shapes

    # -- using the fabric ----------------------------------------------------
    def netns(self, server: str) -> str:
        """The namespace of a server."""
        return self.plan.netns[server]

    def switch_intf(self, switch: str, port: int) -> str:
        """Interface of a switch port (it lives in `switch_netns`)."""
        return self.plan.switch_intfs[(switch, port)]

    def openflow_target(self, switch: str) -> str:
        """Where ovs-ofctl reaches a switch's bridge (its shard's management socket)."""
        return self.shard_of[switch].mgmt(self.plan.bridges[switch])

    def switch_netns(self, switch: str) -> str:
        """Namespace of a switch's OVS shard (where its ports and qdiscs are)."""
        return self.plan.switch_netns[switch]

    def vswitchd_pids(self) -> dict[str, int]:
        """PID of each shard's ovs-vswitchd, by shard name (``ovs0``, ``ovs1``, ...)."""
        return {f"ovs{shard.index}": pid for shard in self.shards
                if (pid := shard.vswitchd_pid()) is not None}

    def bridge(self, switch: str) -> str:
        """OVS bridge name of a switch."""
        return self.plan.bridges[switch]

    def exec(self, server: str, argv: Sequence[str], timeout: float = 60,
             check: bool = False) -> subprocess.CompletedProcess:
        """Run a command inside a server's namespace and wait for it."""
        self._check_controller()
        return subprocess.run(["ip", "netns", "exec", self.netns(server), *argv],
                              capture_output=True, text=True, timeout=timeout, check=check)

    def popen(self, server: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a command inside a server's namespace (cleanup kills it with the namespace)."""
        return subprocess.Popen(["ip", "netns", "exec", self.netns(server), *argv], **kwargs)

    def _check_controller(self) -> None:
        if self.controller:
            self.controller.check_alive()


def require_root() -> None:
    """FabricError unless running as root (namespaces, OVS and tc need it)."""
    if os.geteuid() != 0:
        raise FabricError("building a fabric needs root: run as root (sudo)")
