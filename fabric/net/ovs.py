"""Open vSwitch: make sure a daemon runs, pick the datapath, add/remove a run's bridges."""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterable

from fabric.net.sh import FabricError, run

log = logging.getLogger(__name__)

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
RUN_ID_KEY = "railcc-run"
#: ovs-vswitchd sends on every port of the userspace datapath through ONE
#: AF_PACKET socket, and every frame waiting in a shaped egress queue is
#: charged to that socket's send buffer. With the default 208 KiB, a few full
#: jumbo-frame queues exhaust it and OVS drops frames silently ("error sending
#: Ethernet packet ... Resource temporarily unavailable"). The buffer size is
#: fixed when the socket is made (net.core.wmem_default), so railcc raises the
#: default before it starts OVS itself.
SEND_BUFFER_BYTES = 16 * 2**20


def daemon_running() -> bool:
    """True when ovsdb-server answers and ovs-vswitchd is up."""
    try:
        run(["ovs-vsctl", "--timeout=3", "show"])
    except FabricError:
        return False
    return os.path.exists("/var/run/openvswitch/ovs-vswitchd.pid")


def raise_socket_buffers() -> None:
    """Raise the machine's default socket buffers for OVS (global: not per namespace)."""
    _raise_default_socket_buffer("rmem")
    _raise_default_socket_buffer("wmem")


def ensure_daemon() -> bool:
    """Start the system OVS when none is running (never touch a running one); True if we
    started it. Runs use their own shards (fabric.net.shards); this is for tools that
    need the system daemon."""
    # Before anything else: OVS makes its send socket at its first send, so even an
    # OVS started by someone else (e.g. apt) benefits if it has not sent yet.
    raise_socket_buffers()
    if daemon_running():
        return False
    if not os.path.exists(OVS_CTL):
        raise FabricError("Open vSwitch is not installed (run 'make setup')")
    log.info("starting Open vSwitch (%s start)", OVS_CTL)
    # ovs-ctl prints a harmless ulimit error in containers; judge by the result.
    run([OVS_CTL, "start", "--system-id=random"], check=False, timeout=60)
    for _ in range(50):
        if daemon_running():
            return True
        time.sleep(0.1)
    raise FabricError("Open vSwitch did not start (see /var/log/openvswitch/)")


def _raise_default_socket_buffer(kind: str) -> None:
    """Raise net.core.{kind}_default (wmem: OVS's shared send socket; rmem: its per-port
    receive sockets, 23 jumbo frames by default) to SEND_BUFFER_BYTES if lower."""
    path = f"/proc/sys/net/core/{kind}_default"
    with open(path) as handle:
        current = int(handle.read())
    if current < SEND_BUFFER_BYTES:
        log.info("raising net.core.%s_default %d -> %d for Open vSwitch's sockets",
                 kind, current, SEND_BUFFER_BYTES)
        with open(path, "w") as handle:
            handle.write(str(SEND_BUFFER_BYTES))


def _ovs_socket_memory(netns: str | None = None) -> list[dict[str, int]]:
    """skmem fields of every AF_PACKET socket of ovs-vswitchd (ss -0 -m) in a namespace."""
    out = run(["ss", *(["-N", netns] if netns else []), "-0", "-m", "-p", "-n"], check=False)
    sockets = []
    for line in out.splitlines():
        if '"ovs-vswitchd"' in line and "skmem:(" in line:
            fields = line.split("skmem:(", 1)[1].split(")", 1)[0].split(",")
            sockets.append({f.rstrip("0123456789"): int(f[len(f.rstrip("0123456789")):] or 0)
                            for f in fields})
    return sockets


def socket_drops(netns: Iterable[str | None] = (None,)) -> int:
    """Frames the kernel dropped because ovs-vswitchd's port sockets were full."""
    return sum(sock.get("d", 0) for ns in netns for sock in _ovs_socket_memory(ns))


def send_buffer_bytes(netns: Iterable[str | None] = (None,)) -> int | None:
    """Smallest send buffer among the ovs-vswitchd instances' AF_PACKET send sockets
    (None until one has sent a frame)."""
    sizes = []
    for ns in netns:
        found = [sock["tb"] for sock in _ovs_socket_memory(ns) if "tb" in sock]
        if found:
            sizes.append(max(found))
    return min(sizes) if sizes else None


def kernel_datapath_available() -> bool:
    """True when the openvswitch kernel module is loaded (much faster than userspace)."""
    return os.path.isdir("/sys/module/openvswitch")


def datapath_type() -> str:
    """'system' with the kernel module present, else 'netdev' (userspace datapath)."""
    return "system" if kernel_datapath_available() else "netdev"


@dataclass(frozen=True)
class BridgeSpec:
    """One switch as OVS sees it: bridge name, dpid, ports (interface, OpenFlow port)."""

    name: str
    dpid: int
    ports: tuple[tuple[str, int], ...]


#: Longest wait between a switch's attempts to reach its controller, in ms.
RECONNECT_BACKOFF_MS = 1000


def add_bridges(bridges: Iterable[BridgeSpec], run_id: str, controller: str | None,
                datapath: str, db: str | None = None) -> None:
    """Add every bridge and port in one ovs-vsctl transaction (fail-mode secure, OF1.3),
    on the daemon behind ``db`` (an OVS shard's socket; default: the system one)."""
    args = ["ovs-vsctl", "--timeout=60", *([f"--db={db}"] if db else [])]
    for bridge in bridges:
        args += ["--", "add-br", bridge.name,
                 "--", "set", "bridge", bridge.name,
                 f"datapath_type={datapath}", "fail_mode=secure", "protocols=OpenFlow13",
                 f"other-config:datapath-id={bridge.dpid:016x}",
                 "other-config:disable-in-band=true",
                 f"external_ids:{RUN_ID_KEY}={run_id}"]
        if controller:
            # A restarted controller is found within a second (OVS backs off to 8 s).
            args += ["--", "set-controller", bridge.name, controller,
                     "--", "set", "controller", bridge.name,
                     f"max_backoff={RECONNECT_BACKOFF_MS}"]
        for intf, ofport in bridge.ports:
            args += ["--", "add-port", bridge.name, intf,
                     "--", "set", "interface", intf, f"ofport_request={ofport}"]
    run(args, timeout=120)


def bridges_of_run(run_id: str | None = None) -> dict[str, str]:
    """Bridges railcc made, as {bridge: run prefix}; only one run's when run_id is given."""
    out = run(["ovs-vsctl", "--timeout=5", "--format=csv", "--no-headings",
               "--columns=name,external_ids", "list", "bridge"])
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, _, ids = line.partition(",")
        marker = f'{RUN_ID_KEY}="'
        if marker not in ids and f"{RUN_ID_KEY}=" not in ids:
            continue
        value = ids.split(f"{RUN_ID_KEY}=", 1)[1].split(",")[0].strip('"} ')
        if run_id is None or value == run_id:
            found[name.strip('"')] = value
    return found


def delete_bridges(names: Iterable[str]) -> None:
    """Remove bridges in one transaction (missing ones are ignored; no wait for vswitchd)."""
    args = ["ovs-vsctl", "--timeout=60", "--no-wait"]
    for name in names:
        args += ["--", "--if-exists", "del-br", name]
    if len(args) > 3:
        run(args, timeout=120)


#: How often ovs-vswitchd writes every interface's statistics to its database (ms): an
#: hour, i.e. only when asked (refresh_interface_stats). At OVS's default of 5 s, the
#: main loop read all 384 interfaces of rail-2tier in one turn every 5 s, an 11-12 ms
#: turn that made 10 Mb/s runs "datapath-late" (benchmarks/RESULTS.md).
STATS_UPDATE_MS = 3_600_000
_refreshes = itertools.count(1)


def refresh_interface_stats(db: str) -> None:
    """Make the shard at ``db`` write its interfaces' statistics now: a new update
    interval restarts OVS's stats timer (vswitchd/bridge.c), and ovs-vsctl returns once
    ovs-vswitchd took the change, in the main-loop turn that also sends the statistics."""
    interval = STATS_UPDATE_MS + next(_refreshes) % 1000
    run(["ovs-vsctl", "--timeout=10", f"--db={db}", "set", "Open_vSwitch", ".",
         f"other_config:stats-update-interval={interval}"])


def interface_statistics(prefix: str, db: str | None = None) -> dict[str, dict[str, int]]:
    """The statistics column of a run's interfaces as the database at ``db`` (None: the
    system's) holds it now, by interface name."""
    import json
    out = run(["ovs-vsctl", "--timeout=10", *([f"--db={db}"] if db else []),
               "--format=json", "--columns=name,statistics", "list", "interface"])
    return {name: ({key: int(value) for key, value in stats[1]}
                   if isinstance(stats, list) and stats[0] == "map" else {})
            for name, stats in json.loads(out)["data"] if name.startswith(prefix + "-")}


def interface_drops(prefix: str, dbs: Iterable[str | None] = (None,)) -> dict[str, int]:
    """OVS's own drop counters (rx_dropped + tx_dropped) of a run's interfaces, by name,
    refreshed first on the run's own shards.

    These are packets the switch lost outside the shaped queues, e.g. when a
    port's socket could not take more; they are switch drops all the same.
    """
    drops = {}
    for db in dbs:
        if db:
            refresh_interface_stats(db)
        for name, values in interface_statistics(prefix, db).items():
            drops[name] = values.get("rx_dropped", 0) + values.get("tx_dropped", 0)
    return drops


def version() -> str:
    """First line of ``ovs-vsctl --version`` (e.g. "ovs-vsctl (Open vSwitch) 3.1.0")."""
    return run(["ovs-vsctl", "--version"], check=False).split("\n", 1)[0]
