"""nccl-tests' count and type columns follow each job's dtype, read from the run folder."""

from __future__ import annotations

import json

import pytest

from experiments.analysis.analysis import RunFormatError, analyze
from experiments.workload.spec import from_dict
from tests.unit.experiments.test_analysis import SIZE, make_run


def _with_spec(folder, spec: dict) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "spec": spec}))


@pytest.mark.parametrize("dtype, count, printed", [
    ("float32", SIZE // 4, "float"), ("float64", SIZE // 8, "double"),
    ("float16", SIZE // 2, "half"), ("bfloat16", SIZE // 2, "bfloat16"),
    ("int8", SIZE, "int8"), ("uint64", SIZE // 8, "uint64")])
def test_count_and_type_follow_the_jobs_dtype(tmp_path, dtype, count, printed):
    # The manifest's spec is what the runner writes: Experiment.to_dict(), through JSON.
    experiment = from_dict({
        "experiment": {"name": "synthetic"},
        "topology": {"name": "tiny", "rails": 1, "servers_per_pod": 2, "pods": 1, "spines": 1},
        "jobs": [{"name": "j", "collective": "allreduce", "servers": ["h1", "h2"],
                  "sizes": [SIZE], "dtype": dtype}]})
    folder = make_run(tmp_path / "run")
    _with_spec(folder, json.loads(json.dumps(experiment.to_dict())))
    [row] = analyze(folder)["rows"]
    assert (row["size"], row["count"], row["type"]) == (SIZE, count, printed)


def test_folder_from_before_dtype_reads_as_float32(tmp_path):
    folder = make_run(tmp_path / "run")
    _with_spec(folder, {"name": "old", "jobs": [{"name": "j", "collective": "allreduce"}]})
    [row] = analyze(folder)["rows"]
    assert (row["count"], row["type"]) == (SIZE // 4, "float")


def test_unknown_dtype_in_a_manifest_is_named(tmp_path):
    folder = make_run(tmp_path / "run")
    _with_spec(folder, {"name": "new", "jobs": [{"name": "j", "dtype": "fp8"}]})
    with pytest.raises(RunFormatError, match=r"manifest\.json: job 'j' has unknown dtype 'fp8'"):
        analyze(folder)
