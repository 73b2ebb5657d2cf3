"""Scoped cleanup: remove one run's objects, or every dead railcc run's leftovers.

Never global: only namespaces named ``railcc-{prefix}-*`` (servers, and the
run's OVS shards with their daemons), bridges carrying
``external_ids:railcc-run`` (runs from before the shards), interfaces named
``{prefix}-*``, the run's directory under STATE_DIR and PIDs recorded in a
run's state file (checked against their command line) are touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from fabric.net import ovs
from fabric.net.names import is_shard_netns, link_group, prefix_of_netns
from fabric.net.sh import FabricError, batch, run
from fabric.net.procs import cmdline, stop_pids
from fabric.net.state import STATE_DIR, RunState, load_all

log = logging.getLogger(__name__)

#: How long ``settle`` waits for a run's OVS shards and interfaces to be gone.
SETTLE_S = 60.0


@dataclass
class CleanReport:
    """What a cleanup removed (and what it left because its run is alive)."""

    runs: list[str] = field(default_factory=list)
    netns: int = 0
    bridges: int = 0
    intfs: int = 0
    processes: int = 0
    skipped_live: list[str] = field(default_factory=list)


def list_netns() -> list[str]:
    """Names of all named network namespaces."""
    return sorted(p.name for p in Path("/run/netns").glob("*")) if Path("/run/netns").is_dir() else []


def root_links() -> set[str]:
    """Interface names in the root namespace."""
    return set(os.listdir("/sys/class/net"))


def netns_pids(name: str) -> list[int]:
    """PIDs of processes living in a namespace."""
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(pid) for pid in out.split()]


def clean_run(state: RunState, report: CleanReport | None = None,
              settle: bool = True) -> CleanReport:
    """Remove everything one run created: processes, bridges, namespaces, interfaces.

    With ``settle``, also wait until ovs-vswitchd has released the bridges'
    own interfaces (the userspace datapath removes ~70 ports per second).
    """
    report = report or CleanReport()
    existing_ns = set(list_netns())
    run_ns = [ns for ns in state.netns if ns in existing_ns]
    # OVS shards' daemons hold nothing worth a clean exit (and ovs-vswitchd would
    # delete its ports one by one): SIGKILL; the namespace's deletion does the rest.
    # Their exit closes a socket per port (~8 ms each in the kernel: seconds for a
    # 64 x 8 fabric), so only ``settle`` waits for it.
    shard_pids = [pid for ns in run_ns if is_shard_netns(ns) for pid in netns_pids(ns)]
    report.processes += stop_pids(shard_pids, grace=0, kill_wait=SETTLE_S if settle else 0)
    in_ns = [pid for ns in run_ns if not is_shard_netns(ns) for pid in netns_pids(ns)]
    own = [int(pid) for pid, marker in state.processes.items()
           if marker and marker in cmdline(int(pid))]
    report.processes += stop_pids(in_ns + own)
    if ovs.daemon_running():
        bridges = set(state.bridges) | set(ovs.bridges_of_run(state.prefix))
        doomed = sorted(bridges & _all_bridges())
        ovs.delete_bridges(doomed)
        report.bridges += len(doomed)
    leftover = sorted(set(state.root_intfs) & root_links())
    if leftover:
        _delete_links(state.prefix, leftover)
    report.intfs += len(leftover)
    if run_ns:
        batch("ip", [f"netns del {ns}" for ns in run_ns], force=True)
    report.netns += len(run_ns)
    _wait_gone(state.root_intfs + (state.bridges if settle else []), timeout=SETTLE_S)
    for rundir in state.rundirs:
        if Path(rundir).parent == STATE_DIR and Path(rundir).name == state.prefix:
            shutil.rmtree(rundir, ignore_errors=True)
    state.remove()
    report.runs.append(state.prefix)
    return report


def _delete_links(prefix: str, intfs: list[str]) -> None:
    """Delete a run's veths: by its interface group when it holds only the run's names
    (one kernel batch), else one by one."""
    group = link_group(prefix)
    members = [line.split(":")[1].strip().split("@")[0]
               for line in run(["ip", "-o", "link", "show", "group", str(group)]).splitlines()]
    if members and all(name.startswith(prefix + "-") for name in members):
        run(["ip", "link", "del", "group", str(group)])
    # Deleting one end of a veth pair deletes its peer, so misses are expected.
    remaining = sorted(set(intfs) & root_links())
    run(["ip", "-force", "-batch", "-"], input="".join(f"link del {i}\n" for i in remaining),
        check=False)


def _wait_gone(intfs: list[str], timeout: float = 15.0) -> None:
    """Namespace teardown is asynchronous in the kernel: wait for its veths to vanish."""
    deadline = time.monotonic() + timeout
    while True:
        left = set(intfs) & root_links()
        if not left:
            return
        if time.monotonic() > deadline:
            raise FabricError(f"cleanup: {len(left)} interfaces still present, e.g. {min(left)}")
        time.sleep(0.05)


def _all_bridges() -> set[str]:
    return set(run(["ovs-vsctl", "--timeout=5", "list-br"]).split())


def clean_all(include_live: bool = False) -> CleanReport:
    """Remove the leftovers of every railcc run whose owner is gone (all runs if include_live)."""
    report = CleanReport()
    known = {}
    for state in load_all():
        if state.owner_alive() and not include_live and state.owner_pid != os.getpid():
            report.skipped_live.append(state.prefix)
            continue
        known[state.prefix] = state
    # Orphans: railcc-marked objects whose state file is missing.
    orphan_prefixes = {prefix_of_netns(ns) for ns in list_netns()} - {None}
    if ovs.daemon_running():
        orphan_prefixes |= set(ovs.bridges_of_run(None).values())
    for prefix in sorted(orphan_prefixes - set(known) - set(report.skipped_live)):
        known[prefix] = _state_from_leftovers(prefix)
    for state in known.values():
        try:
            clean_run(state, report)
        except FabricError as exc:
            log.error("cleaning run %s: %s", state.prefix, exc)
            raise
    return report


def _state_from_leftovers(prefix: str) -> RunState:
    """A state for a run that left objects but no state file, found by its names."""
    state = RunState(prefix=prefix, owner_pid=0)
    state.netns = [ns for ns in list_netns() if prefix_of_netns(ns) == prefix]
    if ovs.daemon_running():
        state.bridges = list(ovs.bridges_of_run(prefix))
    state.root_intfs = sorted(intf for intf in root_links() if intf.startswith(prefix + "-"))
    if (STATE_DIR / prefix).is_dir():
        state.rundirs = [str(STATE_DIR / prefix)]
    return state
