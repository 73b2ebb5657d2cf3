"""The reliability campaign's first item: the harness SIGKILLed at 20 seeded instants
spread over build, traffic and teardown, then `railcc clean`: nothing of those runs is
left (bridges, veths, namespaces, processes, OVS shards, state files), and a foreign
OVS bridge and a foreign namespace made by the test are untouched."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fabric.net import ovs
from fabric.net.cleanup import list_netns, root_links
from fabric.net.state import STATE_DIR, load_all
from tests.emulation.test_cleanup import FOREIGN, RAILCC, SPECS, _all_bridges

pytestmark = pytest.mark.emulation
FOREIGN_NETNS = "zzforeign-ns0"
INSTANTS = 20
SEED = 20261202
#: Command-line marks of the processes a run starts (agents, controller, OVS shards).
RUN_PROCESSES = ("fabric.nic.agent", "controllers.openflow.launcher", str(STATE_DIR))


def railcc_processes() -> set[int]:
    """PIDs whose command line marks them as part of some railcc run."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if any(mark in cmdline for mark in RUN_PROCESSES) and "pytest" not in cmdline:
            found.add(int(entry.name))
    return found


def snapshot() -> dict[str, set]:
    """Everything railcc could leave behind, machine-wide."""
    return {"netns": {ns for ns in list_netns() if ns.startswith("railcc-")},
            "veths": {name for name in root_links() if name.startswith("rc")},
            "bridges": set(ovs.bridges_of_run(None)) if ovs.daemon_running() else set(),
            "states": {state.prefix for state in load_all()},
            "rundirs": {p.name for p in STATE_DIR.iterdir()} if STATE_DIR.exists() else set(),
            "processes": railcc_processes()}


@pytest.fixture
def foreign_objects():
    """A bridge and a namespace railcc did not make: every cleanup must leave them."""
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", FOREIGN, "--", "set", "bridge",
                    FOREIGN, "datapath_type=netdev"], check=True)
    subprocess.run(["ip", "netns", "del", FOREIGN_NETNS], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", FOREIGN_NETNS], check=True)
    yield
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", FOREIGN], check=True)
    subprocess.run(["ip", "netns", "del", FOREIGN_NETNS], check=False)


def timed_run(out: Path) -> float:
    """Seconds a whole `railcc run` of the spec takes here (build, traffic, teardown)."""
    started = time.monotonic()
    result = subprocess.run([RAILCC, "run", str(SPECS / "sendrecv.toml"), "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return time.monotonic() - started


def test_sigkill_at_20_instants_then_railcc_clean_leaves_nothing(tmp_path, foreign_objects):
    before = snapshot()
    length = timed_run(tmp_path / "reference")
    # One seeded instant in each twentieth of the run: build, traffic and teardown all get
    # some, whatever this machine's timing.
    rng = random.Random(SEED)
    instants = [max(0.3, length * (i + rng.random()) / INSTANTS) for i in range(INSTANTS)]
    phases = {"before the fabric": 0, "fabric up": 0, "traffic": 0, "after traffic": 0}
    for i, instant in enumerate(instants):
        out = tmp_path / f"killed{i}"
        proc = subprocess.Popen([RAILCC, "run", str(SPECS / "sendrecv.toml"), "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(instant)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        phases["after traffic" if (out / "counters.json").exists() else
               "traffic" if (out / "agents").exists() else
               "fabric up" if (out / "manifest.json").exists() else "before the fabric"] += 1
        cleaned = subprocess.run([RAILCC, "clean"], capture_output=True, text=True, timeout=120)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        left = {key: sorted(now - before[key]) for key, now in snapshot().items()
                if now - before[key]}
        assert not left, (f"killed {instant:.2f} s into a {length:.1f} s run", left)
        assert FOREIGN in _all_bridges() and FOREIGN_NETNS in list_netns()
    # The instants reach every part of a run (build, traffic, teardown).
    assert phases["fabric up"] + phases["before the fabric"] >= 2 and phases["traffic"] >= 5 \
        and phases["after traffic"] >= 1, phases
