"""Fixtures that build real fabrics (shared per module where tests only read them)."""

from pathlib import Path

import pytest

from fabric import ovs
from fabric.cleanup import list_netns
from fabric.names import NETNS_PREFIX
from fabric.network import Network
from fabric.state import load_all
from topologies import load

pytestmark = pytest.mark.emulation


def railcc_leftovers() -> dict:
    """Everything railcc-made that exists on the machine right now."""
    return {
        "netns": [ns for ns in list_netns() if ns.startswith(NETNS_PREFIX)],
        "bridges": sorted(ovs.bridges_of_run(None)) if ovs.daemon_running() else [],
        "states": [state.prefix for state in load_all()],
    }


def start_network(name: str, tmp: Path, algorithm: str = "ecmp") -> Network:
    """Build and start a preset fabric with its controller."""
    net = Network(load(name), algorithm, run_dir=tmp)
    net.start()
    return net


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """The whole emulation session must leave no railcc object behind."""
    ovs.ensure_daemon()
    yield
    assert railcc_leftovers() == {"netns": [], "bridges": [], "states": []}


@pytest.fixture(scope="module")
def small_fabric(tmp_path_factory):
    """rail-2tier-small under ecmp, shared by the tests of one module."""
    net = start_network("rail-2tier-small", tmp_path_factory.mktemp("small"))
    yield net
    net.stop()
