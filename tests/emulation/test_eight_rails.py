"""An 8-rail fabric at full load: a scattered ring AllReduce over all 16 servers of
`rail-2tier` (128 NICs), with the compiled NIC datapath, trusted and near line rate."""

from __future__ import annotations

import pytest

from experiments.analysis.analysis import analyze
from experiments.capacity.sweep import all2all_bytes
from experiments.runner import run
from experiments.workload.spec import from_dict

pytestmark = pytest.mark.emulation
NIC_MBPS = 2.5


def test_a_scattered_ring_over_every_nic_of_rail_2tier_is_trusted(tmp_path):
    spec = {"experiment": {"name": "eight-rails", "seed": 1},
            "topology": {"preset": "rail-2tier", "nic_mbps": NIC_MBPS},
            "jobs": [{"name": "ring", "collective": "allreduce", "servers": 16,
                      "placement": "scattered",
                      "sizes": [all2all_bytes(16, 8, NIC_MBPS, 1.5) // 2]}],
            "limits": {"run_timeout_s": 120}}
    run(from_dict(spec, "eight rails"), tmp_path / "run")
    summary = analyze(tmp_path / "run")
    assert summary["trusted"], summary["fidelity"]["reasons"]
    row = summary["rows"][0]
    assert row["efficiency"] > 0.85, row
    assert summary["loss"]["loss_pct"] == 0, summary["loss"]
