"""PFC on a live fabric: a 2:1 incast drops without it and loses nothing with it."""

from __future__ import annotations

import json

import pytest

from experiments.analysis.report import render
from tests.emulation.test_algorithms import no_openflow_errors
from tests.emulation.test_run import delivered_everything, run_spec, spec_with

pytestmark = pytest.mark.emulation


def incast(flow_control: str) -> dict:
    """Two pipelines across the pods, h1 -> h5 and h2 -> h6, on every rail, over one spine:
    on each rail two line-rate flows meet at pod 0's ToR, whose one 10 Mb/s uplink they
    share (2:1)."""
    jobs = [{"name": f"p{sender}", "collective": "sendrecv",
             "servers": [f"h{sender}", f"h{sender + 4}"], "sizes": ["1MB"], "microbatches": 2,
             "iterations": 1} for sender in (1, 2)]
    return spec_with("sendrecv", topology={"flow_control": flow_control, "spines": 1},
                     jobs=jobs, controller={"algorithm": "ecmp"})


def test_pfc_pauses_a_2_to_1_incast_back_to_its_senders_and_drops_nothing(tmp_path):
    none = run_spec(incast("none"), tmp_path / "none")
    assert none["loss"]["switch_drops"] > 0, none["loss"]    # the incast overflows without PFC
    summary = run_spec(incast("pfc"), tmp_path / "pfc")
    delivered_everything(tmp_path / "pfc")
    no_openflow_errors(tmp_path / "pfc")
    assert summary["trusted"], summary["fidelity"]
    assert summary["loss"]["switch_drops"] == 0, summary["loss"]
    control = summary["flow_control"]
    assert control["kind"] == "pfc" and control["pause_events"] > 0, control
    assert control["watchdog_resumes"] == 0 and control["cycles"] == [], control
    pfc = json.loads((tmp_path / "pfc" / "pfc.json").read_text())
    # The pause spread hop by hop back to the senders' own NICs (their gates are named
    # "server:interface"); the receivers, which only send ACKs, were never paused.
    paused = set(pfc["gates"])
    assert {g.split(":")[0] for g in paused if ":" in g} & {"h1", "h2"}, sorted(paused)
    assert not any(g.startswith(("h5:", "h6:")) for g in paused), sorted(paused)
    report = render(summary, {})
    assert "## Flow control" in report and f"PFC: {control['pause_events']} pause events" in report
