"""Scoped cleanup: after exit, and after SIGKILL + `railcc clean`, nothing of the run is left,
and a foreign bridge is untouched."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric.net import ovs
from fabric.net.cleanup import list_netns, root_links
from fabric.net.state import load_all, pid_alive
from tests.emulation.conftest import NOTHING, SESSION_PREFIXES, railcc_leftovers, start_network

pytestmark = pytest.mark.emulation
RAILCC = str(Path(sys.executable).with_name("railcc"))
SPECS = Path(__file__).parents[2] / "experiments" / "specs"
FOREIGN = "zzforeign0"


@pytest.fixture
def foreign_bridge():
    """A bridge railcc did not make; it must survive every cleanup."""
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", FOREIGN, "--", "set", "bridge",
                    FOREIGN, "datapath_type=netdev"], check=True)
    yield FOREIGN
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", FOREIGN], check=True)


def _all_bridges() -> set[str]:
    return set(subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True,
                              check=True).stdout.split())


def _links_of(prefix: str) -> set[str]:
    return {name for name in root_links() if name.startswith(prefix)}


def _shard_bridges(net) -> set[str]:
    found = set()
    for shard in net.shards:
        found |= set(shard.vsctl(["list-br"]).split())
    return found


def test_context_exit_removes_exactly_the_run(tmp_path, foreign_bridge):
    net = start_network("rail-2tier-small", tmp_path, ovs_shards=3)
    # Nothing of the run in the root namespace or the system OVS: its switches are
    # in its own OVS shards, each in its namespace.
    assert _links_of(net.prefix) == set()
    assert not set(net.plan.bridges.values()) & _all_bridges()
    assert _shard_bridges(net) == set(net.plan.bridges.values())
    daemons = list(net.vswitchd_pids().values())
    assert len(daemons) == len(net.shards) >= 2 and all(pid_alive(p) for p in daemons)
    controller_pid = net.controller.proc.pid
    net.stop()
    assert railcc_leftovers({net.prefix}) == NOTHING
    assert not pid_alive(controller_pid)
    assert not any(pid_alive(pid) for pid in daemons)
    assert foreign_bridge in _all_bridges()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_sigkill_then_railcc_clean_leaves_nothing(tmp_path, foreign_bridge):
    proc = subprocess.Popen([RAILCC, "up", "rail-2tier-small"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for(lambda: "mininet>" in _peek(proc), 90, "the Mininet prompt")
        states = [s for s in load_all() if s.owner_pid == proc.pid]
        assert len(states) == 1
        state = states[0]
        SESSION_PREFIXES.add(state.prefix)
        children = [int(pid) for pid in state.processes]
        shells = [int(p) for ns in state.netns
                  for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                          text=True).stdout.split()]
        assert children and shells
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert railcc_leftovers({state.prefix})["netns"]  # the killed run left its fabric behind
    result = subprocess.run([RAILCC, "clean"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert railcc_leftovers({state.prefix}) == NOTHING
    assert _links_of(state.prefix) == set()
    assert not any(pid_alive(pid) for pid in children + shells)
    assert foreign_bridge in _all_bridges()


_buffers: dict[int, str] = {}


def _peek(proc: subprocess.Popen) -> str:
    """Non-blocking read of what the process printed so far."""
    os.set_blocking(proc.stdout.fileno(), False)
    chunk = proc.stdout.read()
    if chunk:
        _buffers[proc.pid] = _buffers.get(proc.pid, "") + chunk.decode(errors="replace")
    return _buffers.get(proc.pid, "")


def test_bad_topology_starts_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[topology]\nname = "x"\nrails = 0\n')
    before = (set(list_netns()), _all_bridges())
    result = subprocess.run([RAILCC, "up", str(bad)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "railcc: error: topology.rails: must be 1..8, got 0"
    assert (set(list_netns()), _all_bridges()) == before


def test_the_next_run_removes_what_a_killed_run_left_and_says_so(tmp_path, foreign_bridge):
    # A harness SIGKILLed mid-run leaves its fabric; the next `railcc run` removes it
    # (its owner is gone) and says so, and still runs; a foreign bridge stays.
    out = tmp_path / "first"
    proc = subprocess.Popen([RAILCC, "run", str(SPECS / "sendrecv.toml"), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: list((out / "agents").glob("*.sock")) if (out / "agents").exists()
                  else [], 90, "the first run's agents")
        states = [s for s in load_all() if s.owner_pid == proc.pid]
        assert len(states) == 1
        prefix = states[0].prefix
        SESSION_PREFIXES.add(prefix)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert railcc_leftovers({prefix})["netns"]
    second = subprocess.run([RAILCC, "run", str(SPECS / "sendrecv.toml"), "-o",
                             str(tmp_path / "second")], capture_output=True, text=True,
                            timeout=300)
    manifest = json.loads((tmp_path / "second" / "manifest.json").read_text())
    SESSION_PREFIXES.add(manifest["run_prefix"])
    assert second.returncode == 0, second.stderr
    assert f"removed the leftovers of 1 earlier run(s) whose railcc process is gone ({prefix})" \
        in second.stderr
    assert railcc_leftovers({prefix}) == NOTHING
    assert foreign_bridge in _all_bridges()
