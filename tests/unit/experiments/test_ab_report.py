"""The A/B harness with a fake runner (synthetic run folders, no root), its report,
`rebuild`, and the CLI's validation (one-line errors, exit 2, nothing started)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.unit.experiments.test_analysis import CPU_BOUND, make_run

from experiments.ab import report as ab_report
from experiments.ab.campaign import run_ab
from experiments.ab.plan import make_plan
from experiments.workload.spec import load_spec  # noqa: E402
from fabric.net.sh import FabricError  # noqa: E402

SPEC = Path(__file__).parents[3] / "experiments" / "specs" / "allreduce.toml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeRunner:
    """Writes a synthetic run folder; adaptive rep 1 is untrusted, reactive rep 0 fails."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, experiment, run_dir: Path, progress, forced_over_capacity=None) -> Path:
        self.calls.append((experiment.algorithm, experiment.seed))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        progress("round 1/1")
        if (experiment.algorithm, experiment.seed) == ("reactive", 1):
            raise FabricError("agent h1 died")
        untrusted = (experiment.algorithm, experiment.seed) == ("adaptive", 2)
        return make_run(run_dir, fidelity=CPU_BOUND if untrusted else None)


@pytest.fixture(scope="module")
def done_ab(tmp_path_factory):
    """One A/B of 3 algorithms x 2 repetitions, shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("ab")
    messages: list[str] = []
    runner = FakeRunner()
    plan = make_plan("ecmp,adaptive,reactive", 2, None)
    result = run_ab(load_spec(SPEC), plan, tmp_path / "ab", "allreduce.toml",
                    "railcc ab allreduce.toml --algos ecmp,adaptive,reactive --repeat 2",
                    progress=messages.append, runner=runner)
    return result, tmp_path / "ab", runner, messages


def test_runs_are_interleaved_with_seed_per_repetition(done_ab):
    result, folder, runner, messages = done_ab
    assert runner.calls == [("ecmp", 1), ("adaptive", 1), ("reactive", 1),
                            ("ecmp", 2), ("adaptive", 2), ("reactive", 2)]
    assert "ab: run 3/6: reactive rep 0 ..." in messages
    assert "ab: run 4/6: ecmp rep 1: round 1/1" in messages
    assert [(r["dir"], r["status"]) for r in result["runs"]] == [
        ("ecmp/rep0", "trusted"), ("adaptive/rep0", "trusted"), ("reactive/rep0", "failed"),
        ("ecmp/rep1", "trusted"), ("adaptive/rep1", "untrusted"), ("reactive/rep1", "trusted")]
    assert result["runs"][2]["reasons"] == ["run failed: agent h1 died"]
    assert (folder / "ecmp" / "rep1" / "summary.json").exists()
    assert (folder / "ecmp" / "rep1" / "report.md").exists()


def test_ab_json_holds_the_aggregate(done_ab):
    result, folder, _, _ = done_ab
    stored = json.loads((folder / "ab.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["format"] == "railcc-ab/1" and stored["complete"] and stored["stopped"] is None
    assert (stored["algorithms"], stored["repeat"], stored["baseline"], stored["seed"]) == (
        ["ecmp", "adaptive", "reactive"], 2, "ecmp", 1)
    results = stored["results"]
    assert [results[a]["trusted_label"] for a in stored["algorithms"]] == ["2/2", "1/2", "1/2"]
    assert results["ecmp"]["metrics"]["efficiency"]["mean"] == pytest.approx(0.8)
    assert stored["deltas"]["adaptive"]["delta_pct"] == pytest.approx(0.0)
    assert stored["headline_cct"] == "j S=10000"


def test_report_has_table_trust_reasons_and_plots(done_ab):
    _, folder, _, _ = done_ab
    text = (folder / "report.md").read_text()
    assert text.startswith("# railcc A/B: allreduce on rail-2tier-small")
    assert "railcc ab allreduce.toml --algos ecmp,adaptive,reactive --repeat 2" in text
    assert "| ecmp | 2/2 | 80.0 % [80.0, 80.0] | baseline |" in text
    assert ("rep 1 (seed 2, [adaptive/rep1](adaptive/rep1/report.md)) untrusted: CPU-bound: "
            "machine over 95% busy in 5 of 5 seconds (max 97%)") in text
    assert "rep 0 (seed 1, [reactive/rep0](reactive/rep0/report.md)) failed: run failed" in text
    for image in ("ab_efficiency.png", "ab_delay_cdf.png"):
        assert (folder / image).read_bytes().startswith(PNG_MAGIC)
        assert f"]({image})" in text
    for heatmap in ("ecmp/rep0", "adaptive/rep0", "reactive/rep1"):
        assert f"]({heatmap}/utilization_heatmap.png)" in text
        assert (folder / heatmap / "utilization_heatmap.png").exists()


def test_rebuild_rereads_the_summaries(done_ab, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(done_ab[1], folder)
    path = folder / "ecmp" / "rep1" / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(trusted=False, fidelity={"trusted": False, "reasons": ["edited"]})
    path.write_text(json.dumps(summary))
    rebuilt = ab_report.rebuild(folder)
    assert rebuilt["results"]["ecmp"]["trusted_label"] == "1/2"
    assert json.loads((folder / "ab.json").read_text())["results"]["ecmp"]["trusted"] == 1
    assert "edited" in (folder / "report.md").read_text()


def test_ctrl_c_keeps_what_finished(tmp_path):
    plan = make_plan("ecmp,adaptive", 2, "adaptive")
    with pytest.raises(KeyboardInterrupt):
        run_ab(load_spec(SPEC), plan, tmp_path, "s.toml", "railcc ab s.toml", progress=print,
               runner=FakeRunner(interrupt_at=2))
    stored = json.loads((tmp_path / "ab.json").read_text())
    assert len(stored["runs"]) == 1 and not stored["complete"]
    assert stored["stopped"].startswith("stopped after 1 of 4 runs: KeyboardInterrupt")
    assert "**INCOMPLETE:**" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--algos", "ecmp,bogus"], "--algos: unknown algorithm 'bogus' (known: ecmp, adaptive, "
                                "proactive, dcqcn, reactive, swift)"),
    (["--algos", "ecmp,adaptive,ecmp"], "--algos: 'ecmp' is given twice"),
    (["--repeat", "0"], "--repeat: must be 1..100, got 0"),
    (["--repeat", "101"], "--repeat: must be 1..100, got 101"),
    (["--repeat", "three"], "--repeat: must be an integer 1..100, got 'three'"),
    (["--algos", "ecmp,adaptive", "--baseline", "reactive"],
     "--baseline: 'reactive' is not among --algos (ecmp, adaptive)"),
    (["--vary", "transport.nic=python,c"],
     "--vary transport.nic=c: transport.nic: must be one of compiled, python, got 'c'"),
    (["--vary", "transport.nic=python"],
     "--vary transport.nic: give two or more non-empty values, got 'python'"),
    (["--vary", "nic=python,compiled"], "--vary: expected TABLE.KEY=v1,v2 (e.g. "
                                        "transport.nic=python,compiled), got 'nic=python,compiled'"),
    (["--algos", "ecmp", "--vary", "transport.nic=python,compiled", "--baseline", "ecmp"],
     "--baseline: 'ecmp' is not among the arms (ecmp nic=python, ecmp nic=compiled)"),
])
def test_cli_validation_fails_before_anything_starts(monkeypatch, capsys, tmp_path, args,
                                                      message):
    from experiments.cli import main as cli

    def forbidden(*_args, **_kwargs):
        raise AssertionError("started despite invalid options")

    monkeypatch.setattr("fabric.net.network.require_root", forbidden)
    monkeypatch.setattr("experiments.ab.campaign.run_ab", forbidden)
    monkeypatch.setattr(sys, "argv", ["railcc", "ab", str(SPEC), "-o", str(tmp_path / "o"),
                                      *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"railcc: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_cli_json_with_a_fake_runner(monkeypatch, capsys, tmp_path):
    from experiments.cli import main as cli
    monkeypatch.setattr("fabric.net.network.require_root", lambda: None)
    monkeypatch.setattr("experiments.cli.ab.default_runner", FakeRunner())
    monkeypatch.setattr(sys, "argv", ["railcc", "ab", str(SPEC), "--algos", "adaptive,ecmp",
                                      "--repeat", "1", "-o", str(tmp_path / "o"), "--json"])
    cli.main()
    captured = capsys.readouterr()
    stored = json.loads(captured.out)
    assert stored["baseline"] == "ecmp" and stored["complete"]
    assert stored["command"].endswith(f"--baseline ecmp -o {tmp_path / 'o'}")
    assert "ab: run 2/2 ecmp rep 0: trusted, efficiency 80.0 %" in captured.err


def test_a_varied_spec_key_makes_one_arm_per_algorithm_and_value(tmp_path):
    from experiments.workload.spec import from_dict, read_spec
    plan = make_plan("ecmp,adaptive", 2, None, vary="transport.nic=python,compiled")
    assert plan.algorithms == ("ecmp nic=python", "ecmp nic=compiled", "adaptive nic=python",
                               "adaptive nic=compiled")
    assert plan.baseline == "ecmp nic=python"
    data = read_spec(SPEC)
    variants = {arm.label: from_dict(arm.apply(data)) for arm in plan.arms}
    seen = []

    class Recording(FakeRunner):
        def __call__(self, experiment, run_dir, progress, forced_over_capacity=None):
            seen.append((experiment.algorithm, experiment.transport.nic, experiment.seed,
                         run_dir.relative_to(tmp_path).as_posix()))
            return super().__call__(experiment, run_dir, progress)

    result = run_ab(load_spec(SPEC), plan, tmp_path, "s.toml", "railcc ab s.toml",
                    progress=lambda _: None, runner=Recording(), variants=variants)
    assert seen[:4] == [("ecmp", "python", 1, "ecmp-nic=python/rep0"),
                        ("ecmp", "compiled", 1, "ecmp-nic=compiled/rep0"),
                        ("adaptive", "python", 1, "adaptive-nic=python/rep0"),
                        ("adaptive", "compiled", 1, "adaptive-nic=compiled/rep0")]
    assert len(seen) == 8 and seen[4][2] == 2
    assert result["results"]["adaptive nic=compiled"]["trusted_label"] == "1/2"
    assert result["arms"][3] == {"label": "adaptive nic=compiled", "algorithm": "adaptive",
                                 "key": "transport.nic", "value": "compiled"}
    assert "| adaptive nic=python |" in (tmp_path / "report.md").read_text()


def test_the_demo_runs_the_headline_ab_with_a_fake_runner(monkeypatch, capsys, tmp_path):
    # `make demo`'s command: every option of `railcc ab` it does not set must default.
    from experiments.cli import main as cli
    runner = FakeRunner()
    monkeypatch.setattr("fabric.net.network.require_root", lambda: None)
    monkeypatch.setattr("experiments.cli.ab.default_runner", runner)
    monkeypatch.setattr(sys, "argv", ["railcc", "demo", "--repeat", "1", "-o",
                                      str(tmp_path / "demo")])
    cli.main()
    assert [algorithm for algorithm, _ in runner.calls] == ["ecmp", "adaptive", "dcqcn",
                                                            "swift", "proactive"]
    assert json.loads((tmp_path / "demo" / "ab.json").read_text())["complete"]


def test_ctrl_c_exits_130_and_says_so(monkeypatch, capsys, tmp_path):
    # The CLI library turns Ctrl-C into an abort and, not standalone, returns 130 instead
    # of exiting: railcc exited 0 and printed nothing.
    from experiments.cli import main as cli

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("experiments.cli.run.run_and_report", interrupted)
    monkeypatch.setattr(sys, "argv", ["railcc", "run", str(SPEC), "-o", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    assert "railcc: interrupted" in capsys.readouterr().err


def test_resume_finishes_a_stopped_ab_running_only_what_is_missing(monkeypatch, capsys,
                                                                    tmp_path):
    from experiments.cli import main as cli
    folder = tmp_path / "ab"
    first = FakeRunner(interrupt_at=3)
    monkeypatch.setattr("fabric.net.network.require_root", lambda: None)
    monkeypatch.setattr("experiments.cli.ab.default_runner", first)
    monkeypatch.setattr(sys, "argv", ["railcc", "ab", str(SPEC), "--algos", "ecmp,adaptive",
                                      "--repeat", "2", "-o", str(folder)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    stopped = json.loads((folder / "ab.json").read_text())
    assert len(stopped["runs"]) == 2 and stopped["stopped"]
    (folder / "ecmp" / "rep1").mkdir(parents=True)  # the run Ctrl-C cut off left a folder
    (folder / "ecmp" / "rep1" / "partial").write_text("x")
    second = FakeRunner()
    monkeypatch.setattr("experiments.cli.ab.default_runner", second)
    monkeypatch.setattr(sys, "argv", ["railcc", "ab", "--resume", str(folder)])
    cli.main()
    assert second.calls == [("ecmp", 2), ("adaptive", 2)]  # only repetition 1, in order
    done = json.loads((folder / "ab.json").read_text())
    assert done["complete"] and done["stopped"] is None
    assert [(r["algorithm"], r["rep"]) for r in done["runs"]] == [
        ("ecmp", 0), ("adaptive", 0), ("ecmp", 1), ("adaptive", 1)]
    assert done["command"] == stopped["command"]
    assert not (folder / "ecmp" / "rep1" / "partial").exists()
    monkeypatch.setattr(sys, "argv", ["railcc", "ab", "--resume", str(folder)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "the A/B is complete; nothing to resume" in capsys.readouterr().err
