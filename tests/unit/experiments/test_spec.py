"""Experiment specs: strict validation with one-line messages, units, placement, workloads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from experiments.workload.collectives import busbw_factor
from experiments.workload.spec import (DTYPES, Experiment, SpecError, from_dict, load_spec,
                                       parse_size)

SPECS = sorted((Path(__file__).parents[3] / "experiments" / "specs").glob("*.toml"))
BASE = {"experiment": {"name": "t"}, "topology": {"preset": "rail-2tier-small"},
        "jobs": [{"collective": "allreduce", "servers": 4, "sizes": ["1MB"]},
                 {"name": "b", "collective": "all2all", "servers": 4, "sizes": [1000]}]}


def _with(change) -> dict:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def _job(i: int, **values):
    return lambda d: d["jobs"][i].update(values)


def _set(table: str, **values):
    return lambda d: d.setdefault(table, {}).update(values)


@pytest.mark.parametrize("change, message", [
    (_job(0, sizes=[1000, 0]), "jobs[0].sizes[1]: must be > 0, got 0"),
    (_job(1, rails=[0, 7]), "jobs[1].rails: rail 7 does not exist (fabric has 4 rails)"),
    (_job(1, rails=[1, 1]), "jobs[1].rails: rail 1 appears twice (fabric has 4 rails)"),
    (_job(0, servers=["h1", "h99"]), "jobs[0].servers: h99 is not a server of rail-2tier-small"),
    (_set("transport", kind="udp"), "transport.kind: must be one of roce, tcp, got 'udp'"),
    (_set("transport", nic="rust"), "transport.nic: must be one of compiled, python, got 'rust'"),
    (lambda d: (_job(0, servers=["h1", "h2"])(d), _job(1, servers=["h2", "h3"])(d)),
     "jobs[1].servers: h2 is in both job 'job0' and job 'b'"),
    (_job(0, servers=6),
     "jobs[1].servers: job needs 4 servers, fabric 'rail-2tier-small' has 2 free (6 excluded)"),
    (_job(0, servers=1), "jobs[0].servers: must be >= 2, got 1"),
    (_job(0, servers="4"), "jobs[0].servers: must be an integer, got '4'"),
    (_job(0, sizes=["1XB"]),
     "jobs[0].sizes[0]: not a size (units: B, KB, MB, GB, KiB, MiB, GiB), got '1XB'"),
    (_job(0, sizes=[8]),
     "jobs[0].sizes[0]: must be >= 16 bytes for allreduce on 4 servers x 4 rails, got 8"),
    (_job(0, sizes=[]), "jobs[0].sizes: must be a non-empty list of sizes, got []"),
    (_job(0, sizes=[True]),
     "jobs[0].sizes[0]: must be an integer or a string like '4MB', got True"),
    (_job(0, pxn=False), "jobs[0].pxn: only for collective = all2all, got allreduce"),
    (_job(0, microbatches=2), "jobs[0].microbatches: only for collective = sendrecv, got allreduce"),
    (_job(0, collective="broadcast"), "jobs[0].collective: must be one of allreduce, allgather, "
                                      "reducescatter, all2all, sendrecv, got 'broadcast'"),
    (_job(0, placement="random"), "jobs[0].placement: must be one of packed, scattered, "
                                  "got 'random'"),
    (_job(0, servers=["h1", "h2"], placement="packed"),
     "jobs[0].placement: only when servers is a count"),
    (_job(0, iterations=0), "jobs[0].iterations: must be 1..1000, got 0"),
    (_job(0, qps_per_connection=65), "jobs[0].qps_per_connection: must be 1..64, got 65"),
    (_job(0, name="a b"), "jobs[0].name: must be 1..40 letters, digits, '-' or '_', got 'a b'"),
    (_job(1, name="job0"), "jobs[1].name: job name 'job0' used twice"),
    (_job(0, gpus=8), "jobs[0].gpus: unknown key (known: name, collective, servers, placement, "
                      "rails, sizes, dtype, iterations, pxn, qps_per_connection, microbatches)"),
    (lambda d: d.update(jobs=[]), "jobs: need at least one [[jobs]] table"),
    (lambda d: d.update(extra={}), "extra: unknown key (known: experiment, topology, "
                                   "controller, jobs, transport, telemetry, limits, emulator, dcqcn, swift, faults)"),
    (lambda d: d.pop("topology"), "topology: required table"),
    (_set("topology", preset="nope"), "topology.preset: unknown preset 'nope' (known: "
                                      "rail-2tier-small, rail-2tier, rail-3tier, fat-tree-k4)"),
    (_set("topology", nic_mbps=0), "topology.nic_mbps: must be > 0, got 0.0"),
    (_set("topology", rails=9), "topology.rails: must be 1..8, got 9"),
    (_set("controller", algorithm="magic"), "controller.algorithm: must be one of ecmp, "
                                            "adaptive, proactive, dcqcn, reactive, swift, got 'magic'"),
    (_set("telemetry", rate_hz=0), "telemetry.rate_hz: must be 1..100, got 0"),
    (_set("telemetry", rate_hz=101), "telemetry.rate_hz: must be 1..100, got 101"),
    (_set("telemetry", rate_hz="fast"), "telemetry.rate_hz: must be a number, got 'fast'"),
    (_set("telemetry", focus_hz=-1), "telemetry.focus_hz: must be 0..1000, got -1"),
    (_set("transport", window_packets=0), "transport.window_packets: must be 1..4096, got 0"),
    (_set("transport", ack_every=40), "transport.ack_every: must be 1..32, got 40"),
    (_set("limits", max_offered_fraction=0), "limits.max_offered_fraction: must be > 0, got 0"),
    (_set("experiment", seed=-1), "experiment.seed: must be >= 0, got -1"),
    (_set("emulator", ovs_shards=65), "emulator.ovs_shards: must be 0..64, got 65"),
    (_set("emulator", ovs_allocator="jemalloc"),
     "emulator.ovs_allocator: input should be 'tcmalloc' or 'glibc', got 'jemalloc'"),
    (lambda d: d["experiment"].pop("name"), "experiment.name: required"),
    (_set("experiment", name="my run"),
     "experiment.name: must be 1..40 letters, digits, '-' or '_', got 'my run'"),
    (lambda d: d["jobs"][0].pop("collective"),
     "jobs[0].collective: required (one of allreduce, allgather, reducescatter, all2all, "
     "sendrecv)"),
])
def test_bad_spec_gives_one_line_message(change, message):
    with pytest.raises(SpecError) as info:
        from_dict(_with(change))
    assert str(info.value) == message


def test_defaults():
    experiment = from_dict(BASE)
    assert (experiment.seed, experiment.algorithm, experiment.stats_interval_ms) == (0, "ecmp", 200)
    assert (experiment.transport.kind, experiment.transport.window_packets,
            experiment.transport.rto_ms, experiment.transport.ack_every) == ("roce", 32, 200, 8)
    assert experiment.transport.nic == "compiled"
    assert (experiment.telemetry_rate_hz, experiment.delay_sample_every) == (10, 1)
    assert experiment.telemetry_focus_hz == 50
    assert (experiment.run_timeout_s, experiment.max_offered_fraction) == (120, None)
    job = experiment.jobs[0]
    assert (job.name, job.placement, job.rails, job.iterations, job.pxn,
            job.qps_per_connection, job.microbatches) == ("job0", "packed", (0, 1, 2, 3), 1,
                                                          True, 1, 1)
    # packed: job0 fills pod 0, job b gets pod 1
    assert job.servers == ("h1", "h2", "h3", "h4")
    assert experiment.jobs[1].servers == ("h5", "h6", "h7", "h8")


def test_topology_overrides_and_inline():
    experiment = from_dict(_with(_set("topology", nic_mbps=20, buffer_bytes=200_000)))
    assert (experiment.fabric.name, experiment.fabric.nic_mbps,
            experiment.fabric.buffer_bytes) == ("rail-2tier-small", 20.0, 200_000)
    inline = from_dict(_with(lambda d: d.update(
        topology={"name": "mine", "rails": 2, "servers_per_pod": 4, "pods": 2, "spines": 2})))
    assert (inline.fabric.name, inline.fabric.rails, inline.jobs[0].rails) == ("mine", 2, (0, 1))


@pytest.mark.parametrize("text, expected", [
    ("1MB", 1_000_000), ("256KB", 256_000), ("1MiB", 1_048_576), ("4 KiB", 4096),
    ("1GB", 10**9), ("2gib", 2 * 2**30), ("1.5MB", 1_500_000), ("100", 100), ("100B", 100),
    (4096, 4096)])
def test_sizes_and_units(text, expected):
    assert parse_size(text, "x") == expected


def test_fractional_bytes_rejected():
    with pytest.raises(SpecError, match=r"^x: must be a whole number of bytes, got '1.5B'$"):
        parse_size("1.5B", "x")


def test_scattered_placement_is_seeded():
    data = _with(lambda d: d.update(jobs=[{"collective": "allreduce", "servers": 4,
                                           "placement": "scattered", "sizes": [1000]}]))
    first, again = from_dict(data), from_dict(data)
    assert first.jobs[0].servers == again.jobs[0].servers
    other = from_dict(_with(lambda d: (d.update(jobs=data["jobs"]), _set("experiment", seed=5)(d))))
    assert len(set(first.jobs[0].servers)) == 4 and other.jobs[0].servers != first.jobs[0].servers


def _bytes_per_rank(experiment: Experiment) -> list[dict[str, int]]:
    return [{s: workload.jobs[0].bytes_sent(s) for s in workload.jobs[0].ranks}
            for _, workload in experiment.workloads()]


def test_workload_bytes_match_collective_theory():
    data = _with(lambda d: d.update(jobs=[{"collective": "allreduce", "servers": 8,
                                           "sizes": ["1MB", "4MB"]}]))
    experiment = from_dict(data)
    phases = experiment.workloads()
    assert [size for size, _ in phases] == [1_000_000, 4_000_000]
    for (size, _), sent in zip(phases, _bytes_per_rank(experiment)):
        # AllReduce: 2(n-1)/n x S per rank
        assert set(sent.values()) == {int(size * busbw_factor("allreduce", 8))}


def test_workload_uses_the_jobs_rails():
    data = _with(lambda d: d.update(jobs=[{"collective": "allreduce", "servers": 2,
                                           "rails": [1, 3], "sizes": [4000]}]))
    experiment = from_dict(data)
    [(_, workload)] = experiment.workloads()
    assert {t.src_rail for t in workload.transfers()} == {1, 3}
    records = experiment.transfer_records(experiment.topology())
    assert {r["src_ip"].split(".")[1] for r in records} == {"1", "3"}
    assert all(a < r["id"] for r in records for a in r["after"])


def test_transfer_records_cover_iterations_and_sizes():
    experiment = from_dict(_with(_job(0, sizes=["1KB", "2KB"], iterations=2)))
    records = experiment.transfer_records(experiment.topology())
    job0 = [r for r in records if r["job"] == "job0"]
    keys = {(r["collective_size"], r["iteration"]) for r in job0}
    assert keys == {(1000, 0), (1000, 1), (2000, 0), (2000, 1)}
    assert [r["id"] for r in records] == list(range(len(records)))
    assert sum(r["size"] for r in job0 if r["iteration"] == 0 and r["collective_size"] == 2000) \
        == 4 * int(2000 * busbw_factor("allreduce", 4))


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[experiment\nname = 1\n")
    with pytest.raises(SpecError, match=r"broken\.toml: not valid TOML: ") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_load(path):
    experiment = load_spec(path)
    # Every job's servers exist on the spec's fabric (most ship on rail-2tier-small;
    # ring-64x8.toml is the capacity goal's 64 x 8).
    servers = {s.name for s in experiment.topology().servers()}
    assert experiment.jobs and all(set(job.servers) <= servers for job in experiment.jobs)
    assert experiment.workloads()


def test_all_shipped_specs_present():
    assert {p.name for p in SPECS} >= {"allreduce.toml", "all2all.toml", "sendrecv.toml",
                                       "multijob.toml"}


def test_multijob_spec_is_two_disjoint_allreduce_jobs():
    experiment = load_spec(next(p for p in SPECS if p.name == "multijob.toml"))
    a, b = experiment.jobs
    assert a.collective == b.collective == "allreduce" and len(a.servers) == len(b.servers) == 4
    assert not set(a.servers) & set(b.servers)


def test_dtype_defaults_to_float32_and_reaches_the_manifest():
    experiment = from_dict(_with(_job(1, dtype="bfloat16")))
    assert [job.dtype for job in experiment.jobs] == ["float32", "bfloat16"]
    assert [job["dtype"] for job in experiment.to_dict()["jobs"]] == ["float32", "bfloat16"]


def test_dtype_is_one_of_the_nccl_tests_types():
    assert set(DTYPES) == {"int8", "uint8", "int32", "uint32", "int64", "uint64", "float16",
                           "bfloat16", "float32", "float64"}
    with pytest.raises(SpecError, match=r"^jobs\[0\]\.dtype: must be one of int8, .*, got 'half'$"):
        from_dict(_with(_job(0, dtype="half")))


def test_the_nic_datapath_reaches_the_agents_settings():
    from experiments.runner import nic_settings
    chosen = copy.deepcopy(BASE)
    chosen["transport"] = {"nic": "python"}
    assert nic_settings(from_dict(chosen, "t")).datapath == "python"
    assert nic_settings(from_dict(copy.deepcopy(BASE), "t")).datapath == "compiled"


@pytest.mark.parametrize("algorithm, dcqcn, swift, ack_every", [
    ("ecmp", False, False, 8), ("dcqcn", True, False, 8), ("reactive", True, False, 8),
    ("swift", False, True, 2), ("adaptive", False, False, 8)])
def test_the_nic_congestion_control_reaches_the_agents_settings(algorithm, dcqcn, swift,
                                                                 ack_every):
    # dcqcn / swift run at the NICs, each with its own table; Swift's NICs ACK every two
    # packets (its delay samples ride on ACKs) unless the transport asks for more.
    from experiments.runner import nic_settings
    chosen = copy.deepcopy(BASE)
    chosen["controller"] = {"algorithm": algorithm}
    chosen["swift"] = {"beta": 0.5}
    settings = nic_settings(from_dict(chosen, "t"))
    assert (settings.dcqcn is not None, settings.swift is not None) == (dcqcn, swift)
    assert settings.ack_every == ack_every
    if swift:
        assert settings.swift["beta"] == 0.5
        chosen["transport"] = {"ack_every": 1}
        assert nic_settings(from_dict(chosen, "t")).ack_every == 1
