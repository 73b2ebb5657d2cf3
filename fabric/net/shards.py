"""OVS shards: a run's switches split over several private ovs-vswitchd instances.

One ovs-vswitchd polls every non-PMD port of the userspace datapath on every
wake-up (benchmarks/RESULTS.md, "profile": about 4 us per port per wake on
top of ~100 us, and all bridges share one core). A run starts its own
instances, each with its own ovsdb, run directory and network namespace
(two netdev datapaths cannot share a namespace: PLATFORM.md), and gives each
a share of the switches (``[emulator] ovs_shards``; one by default, see
`AUTO_SHARDS`). The shard is also the unit a later issue spreads over machines.

Each shard lives in namespace ``railcc-{prefix}-ovs{i}``; its daemons run in
it, so the run's cleanup (which stops every process in the run's namespaces
and then deletes them) removes a shard completely, after SIGKILL too. The
switch-side end of every link is in its switch's shard; links between shards
are veths across namespaces. The controller is reached over a Unix socket
(a namespace's 127.0.0.1 is its own).
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from fabric.net import names, ovs
from fabric.net.netns import write_sysctls
from fabric.net.sh import FabricError, run

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
#: ovs-vswitchd allocates and frees a 32-frame receive batch (9 KB each at MTU
#: 9000) per port per wake-up; glibc's allocator spends most of the daemon's
#: time on that (perf: _int_malloc/_int_free/unlink_chunk ~38 %). tcmalloc's
#: per-size caches halve the daemon's CPU at 100 ports (RESULTS.md, profile).
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
#: Built by `make setup` from pollgate.c: answers the receive calls ovs-vswitchd makes on
#: ports its last poll() found idle without a system call (one recvmmsg per port and one
#: accept per bridge listener on every turn of its main loop; RESULTS.md, "The capacity
#: goal table, where it stands (2026-12-07)").
POLLGATE = Path(__file__).with_name("pollgate.so")
#: Shards by default. Measured on 2 cores (RESULTS.md, "OVS shards"): splitting the
#: switches over 2-8 instances did not lower OVS's total CPU (each instance wakes
#: for its own hop of every frame, and a wake-up costs ~100 us here whatever the
#: port count), and unpinned instances on both cores delayed the NIC agents'
#: wake-ups (NIC lateness 1 % -> 10-12 %, untrusted). Pinned to one core they
#: neither hurt nor helped. So one instance, unless a spec asks for more.
AUTO_SHARDS = 1
START_TIMEOUT_S = 20.0
SHARD_SYSCTLS = {"ipv6/conf/all/disable_ipv6": "1", "ipv6/conf/default/disable_ipv6": "1"}


def _tool(name: str) -> str:
    """Absolute path of an Open vSwitch program (/usr/sbin may not be on PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise FabricError(f"{name}: not installed (run 'make setup')")
    return found


def shard_netns(prefix: str, index: int) -> str:
    """Namespace of one shard."""
    return names.netns_name(prefix, f"ovs{index}")


def assign(ports_by_switch: Mapping[str, int], count: int) -> dict[str, int]:
    """Switch -> shard index, balancing the number of ports (largest switch first).

    Deterministic: ties go to the lower shard index, switches in name order."""
    if count < 1:
        raise ValueError(f"shards: must be >= 1, got {count}")
    load = [0] * count
    placed: dict[str, int] = {}
    for switch in sorted(ports_by_switch, key=lambda s: (-ports_by_switch[s], s)):
        index = min(range(count), key=lambda i: (load[i], i))
        placed[switch] = index
        load[index] += ports_by_switch[switch]
    return placed


def auto_count(switches: int) -> int:
    """Default shard count for a fabric of ``switches`` switches."""
    return max(1, min(AUTO_SHARDS, switches))


@dataclass(frozen=True)
class Shard:
    """One private Open vSwitch: namespace, run directory, and how to reach it."""

    index: int
    netns: str
    rundir: Path
    #: "tcmalloc" (preloaded) or "glibc" (the default allocator).
    allocator: str = "tcmalloc"
    #: Preload pollgate.so into ovs-vswitchd (see POLLGATE).
    pollgate: bool = True

    @property
    def db(self) -> str:
        """ovsdb-server's socket (the ``--db`` of ovs-vsctl)."""
        return f"unix:{self.rundir}/db.sock"

    @property
    def vswitchd_pidfile(self) -> Path:
        """Where ovs-vswitchd writes its PID."""
        return self.rundir / "ovs-vswitchd.pid"

    @property
    def controller_socket(self) -> Path:
        """Where this shard's switches reach the controller (OVS allows a Unix controller
        socket only inside its run directory)."""
        return self.rundir / "controller.sock"

    def vswitchd_pid(self) -> int | None:
        """PID of this shard's ovs-vswitchd (None if it has not started)."""
        try:
            return int(self.vswitchd_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def vsctl(self, args: list[str], timeout: float = 120) -> str:
        """Run ovs-vsctl against this shard's database."""
        return run(["ovs-vsctl", f"--db={self.db}", "--timeout=60", *args], timeout=timeout)

    def mgmt(self, bridge: str) -> str:
        """OpenFlow management socket of one bridge (for ovs-ofctl)."""
        return f"unix:{self.rundir}/{bridge}.mgmt"

    @property
    def turn_stats(self) -> Path:
        """Where pollgate keeps the main loop's turn times (fabric/measure/turns.py)."""
        return self.rundir / "turns.bin"

    def preload(self) -> list[str]:
        """The libraries preloaded into this shard's ovs-vswitchd; FabricError if one is missing."""
        libraries = []
        if self.allocator == "tcmalloc":
            if not os.path.exists(TCMALLOC):
                raise FabricError(f"{TCMALLOC} missing: install libtcmalloc-minimal4 "
                                  "(make setup), or set [emulator] ovs_allocator = \"glibc\"")
            libraries.append(TCMALLOC)
        if self.pollgate:
            if not POLLGATE.exists():
                raise FabricError(f"{POLLGATE} missing: run 'make setup' (it builds it), "
                                  "or set [emulator] ovs_pollgate = false")
            libraries.append(str(POLLGATE))
        return libraries

    def start(self) -> None:
        """Create the namespace, the database and both daemons; wait until they answer."""
        preload = self.preload()   # a missing library fails before anything is created
        if self.rundir.exists():
            shutil.rmtree(self.rundir)
        self.rundir.mkdir(parents=True)
        run(["ip", "netns", "add", self.netns])
        write_sysctls(SHARD_SYSCTLS, self.netns)
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        db_file = self.rundir / "conf.db"
        run([_tool("ovsdb-tool"), "create", str(db_file), OVS_SCHEMA])
        d = str(self.rundir)
        env = {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d}
        exec_ns = ["ip", "netns", "exec", self.netns]
        run(exec_ns + [_tool("ovsdb-server"), str(db_file), f"--remote=punix:{d}/db.sock",
                            f"--pidfile={d}/ovsdb-server.pid", f"--unixctl={d}/ovsdb-server.ctl",
                            f"--log-file={d}/ovsdb-server.log", "--detach"], env=env)
        run(["ovs-vsctl", f"--db={self.db}", "--no-wait", "init", "--", "set", "Open_vSwitch",
             ".", f"other_config:stats-update-interval={ovs.STATS_UPDATE_MS}"])
        env["LD_PRELOAD"] = " ".join(preload)
        if self.pollgate:
            env["POLLGATE_STATS"] = str(self.turn_stats)
        run(exec_ns + [_tool("ovs-vswitchd"), self.db, f"--pidfile={self.vswitchd_pidfile}",
                            f"--unixctl={d}/ovs-vswitchd.ctl",
                            f"--log-file={d}/ovs-vswitchd.log", "--detach",
                            # No tunnels here: without it every link event in the
                            # namespace re-reads every interface's addresses (getifaddrs
                            # under the rtnl lock all namespaces share).
                            "--disable-system-route"], env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.vswitchd_pid() is None:
            if time.monotonic() > deadline:
                raise FabricError(f"shard {self.netns}: ovs-vswitchd did not start "
                                  f"(see {d}/ovs-vswitchd.log)")
            time.sleep(0.02)


def plan_shards(prefix: str, count: int, rundir: Path, allocator: str = "tcmalloc",
                pollgate: bool = True) -> list[Shard]:
    """The ``count`` shards of a run, their run directories under ``rundir``."""
    if allocator not in ("tcmalloc", "glibc"):
        raise ValueError(f"allocator: must be tcmalloc or glibc, got {allocator!r}")
    return [Shard(i, shard_netns(prefix, i), rundir / f"ovs{i}", allocator, pollgate)
            for i in range(count)]


def start_all(shards: Iterable[Shard]) -> None:
    """Start every shard (in parallel: each waits on its own daemons)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(Shard.start, shards))


def remove_rundirs(shards: Iterable[Shard]) -> None:
    """Delete the shards' run directories (after their daemons are gone)."""
    for shard in shards:
        shutil.rmtree(shard.rundir, ignore_errors=True)
