"""Fixtures that build real fabrics (shared per module where tests only read them)."""

from pathlib import Path

import pytest

from fabric.net import ovs
from fabric.net.cleanup import list_netns
from fabric.net.names import prefix_of_netns
from fabric.net.network import Network
from fabric.net.state import STATE_DIR, load_all
from topologies import load

pytestmark = pytest.mark.emulation


#: Run prefixes this test session created (other railcc runs on the machine are not ours).
SESSION_PREFIXES: set[str] = set()


def railcc_leftovers(prefixes: set[str] | None = None) -> dict:
    """railcc-made objects of the given runs (default: this session's) that still exist."""
    prefixes = SESSION_PREFIXES if prefixes is None else prefixes
    bridges = ovs.bridges_of_run(None) if ovs.daemon_running() else {}
    return {
        "netns": [ns for ns in list_netns() if prefix_of_netns(ns) in prefixes],
        "bridges": sorted(b for b, prefix in bridges.items() if prefix in prefixes),
        "states": [state.prefix for state in load_all() if state.prefix in prefixes],
        "rundirs": sorted(p for p in prefixes if (STATE_DIR / p).exists()),
    }


#: What `railcc_leftovers` returns when a run left nothing behind.
NOTHING = {"netns": [], "bridges": [], "states": [], "rundirs": []}


def start_network(name: str, tmp: Path, algorithm: str = "ecmp", **options) -> Network:
    """Build and start a preset fabric with its controller (recorded for the leak check)."""
    net = Network(load(name), algorithm, run_dir=tmp, **options)
    SESSION_PREFIXES.add(net.prefix)
    WATCHED_RUN_DIRS.append(Path(tmp))
    net.start()
    return net


#: Run folders made outside a test's own tmp_path (module fixtures): their controller logs
#: are checked after every test too.
WATCHED_RUN_DIRS: list[Path] = []
#: What no controller log may contain (Faucet checks its logs after every test likewise).
CONTROLLER_PROBLEMS = ("OFPErrorMsg", "Traceback (most recent call last)", " ERROR ")


def controller_problems(folders: list[Path]) -> list[str]:
    """Lines of the controller logs under ``folders`` that report an OpenFlow error, an
    exception or an error."""
    found = []
    for folder in folders:
        for log in sorted(Path(folder).rglob("controller.log")):
            for line in log.read_text(errors="replace").splitlines():
                if any(problem in line for problem in CONTROLLER_PROBLEMS):
                    found.append(f"{log}: {line}")
    return found


@pytest.fixture(autouse=True)
def controller_logs_stay_clean(request, tmp_path):
    """After every emulation test: no controller it ran logged an OpenFlow error or an
    exception (mark a test ``controller_errors_expected`` if it provokes them)."""
    yield
    if request.node.get_closest_marker("controller_errors_expected"):
        return
    problems = controller_problems([tmp_path, *WATCHED_RUN_DIRS])
    assert not problems, "controller log:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """The whole emulation session must leave none of its railcc objects behind."""
    ovs.ensure_daemon()  # the system OVS: test_cleanup proves railcc never touches it
    yield
    assert railcc_leftovers() == NOTHING


#: The experiment seed of `small_fabric` (it must reach the switches' hash basis).
SMALL_FABRIC_SEED = 5


@pytest.fixture(scope="module")
def small_fabric(tmp_path_factory):
    """rail-2tier-small under ecmp on two OVS shards (links cross namespaces), experiment
    seed `SMALL_FABRIC_SEED`, shared by the tests of one module."""
    net = start_network("rail-2tier-small", tmp_path_factory.mktemp("small"), ovs_shards=2,
                        controller_options={"seed": SMALL_FABRIC_SEED})
    yield net
    net.stop()
