"""Where a fabric name is taken (`railcc topo show | up | check | calibrate`): presets and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.main import app
from experiments.cli.topology_arg import resolve
from topologies import TopologyError, preset

SPECS = Path(__file__).parents[3] / "experiments" / "specs"
SPEC_FILE = """
[experiment]
name = "x"

[topology]
preset = "rail-2tier"
nic_mbps = 40
pods = 1

[controller]
algorithm = "adaptive"

[[jobs]]
collective = "allreduce"
servers = 4
sizes = ["1MB"]
"""


def test_a_name_is_a_preset():
    assert resolve("rail-3tier") == preset("rail-3tier")


def test_shipped_experiment_spec_gives_its_fabric():
    assert resolve(str(SPECS / "headline.toml")) == preset("rail-2tier-small")


def test_preset_with_overrides_in_an_experiment_spec(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(SPEC_FILE)
    assert resolve(str(path)) == preset("rail-2tier").replace(nic_mbps=40, pods=1)


def test_plain_keys_may_name_a_preset(tmp_path):
    path = tmp_path / "fabric.json"
    path.write_text(json.dumps({"preset": "rail-2tier-small", "uplink_mbps": 5}))
    assert resolve(str(path)).fabric_mbps == 5.0
    path.write_text(json.dumps({"name": "mine", "rails": 2}))
    assert resolve(str(path)).rails == 2


@pytest.mark.parametrize("text, message", [
    ('[topology]\npreset = "rail-2tier"\nracks = 2\n', "topology.racks: unknown key"),
    ('[topology]\npreset = "rail-9tier"\n', "topology.preset: unknown preset 'rail-9tier'"),
    ('[topology]\npreset = "rail-2tier"\nrails = "8"\n',
     "topology.rails: must be an integer, got '8'"),
])
def test_bad_topology_table_is_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        resolve(str(path))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_topo_show_reads_an_experiment_spec():
    result = CliRunner().invoke(app, ["topo", "show", str(SPECS / "headline.toml"), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["name"], shown["servers"], shown["rails"]) == ("rail-2tier-small", 8, 4)
