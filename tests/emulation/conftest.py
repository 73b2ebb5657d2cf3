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
    net.start()
    return net


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """The whole emulation session must leave none of its railcc objects behind."""
    ovs.ensure_daemon()  # the system OVS: test_cleanup proves railcc never touches it
    yield
    assert railcc_leftovers() == NOTHING


@pytest.fixture(scope="module")
def small_fabric(tmp_path_factory):
    """rail-2tier-small under ecmp on two OVS shards (links cross namespaces), shared by
    the tests of one module."""
    net = start_network("rail-2tier-small", tmp_path_factory.mktemp("small"), ovs_shards=2)
    yield net
    net.stop()
