"""Generated specs, valid and broken, through the validator: each is either an Experiment
or one line naming the field that is wrong (never another exception, never two lines)."""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.workload.spec import SpecError, from_dict
from topologies import TopologyError

BASE = tomllib.loads((Path(__file__).parents[3] / "experiments" / "specs" /
                      "headline.toml").read_text())
TABLES = ["experiment", "topology", "controller", "transport", "telemetry", "limits",
          "emulator", "dcqcn", "swift", "jobs", "bogus"]
KEYS = sorted({key for table in BASE.values() if isinstance(table, dict) for key in table}
              | {key for job in BASE["jobs"] for key in job}
              | {"kmin_bytes", "kmax_bytes", "pmax", "plb_rounds", "nic", "ovs_shards",
                 "hop_target_frames", "beta", "max_mdf",
                 "rails", "pods", "spines", "nic_mbps", "tor_uplink_links", "mtu",
                 "max_offered_fraction", "dtype", "qps_per_connection", "no_such_key"})
TEXT = st.characters(blacklist_categories=("Cs",))  # TOML has no lone surrogates
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True),
                   st.text(TEXT, max_size=12),
                   st.lists(st.one_of(st.integers(-5, 10**7), st.text(TEXT, max_size=6)),
                            max_size=4),
                   st.dictionaries(st.text(TEXT, max_size=5), st.integers(), max_size=2),
                   st.sampled_from(["4MB", "0B", "-1MB", "1.5GiB", "all", "scattered", "packed",
                                    "ecmp", "dcqcn", "swift", "python", "compiled", "rail-3tier", "x" * 50]))
EDITS = st.lists(st.tuples(st.sampled_from(TABLES), st.sampled_from(KEYS), VALUES,
                           st.booleans()), min_size=0, max_size=4)


def mutate(edits) -> dict:
    data = copy.deepcopy(BASE)
    for table, key, value, drop in edits:
        if table == "jobs":
            job = data["jobs"][0] if data.get("jobs") else {}
            (job.pop(key, None) if drop else job.__setitem__(key, value))
        elif drop and table in data and key == KEYS[0]:
            data.pop(table)
        else:
            section = data.setdefault(table, {})
            if isinstance(section, dict):
                (section.pop(key, None) if drop else section.__setitem__(key, value))
    return data


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_every_generated_spec_validates_or_names_its_wrong_field_in_one_line(edits):
    data = mutate(edits)
    try:
        from_dict(data, "fuzz")
    except (SpecError, TopologyError) as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert ": " in message, message  # "field.path: what is wrong"


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\'
                         else c for c in text) + '"'


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") \
            if value in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()
                           if v is not None) + "}"


def to_toml(data: dict) -> str:
    """TOML text of a spec mapping (tables of values, [[jobs]]; None values left out)."""
    lines = []
    for table, section in data.items():
        rows = section if table == "jobs" and isinstance(section, list) else [section]
        for row in rows:
            if not isinstance(row, dict):
                lines += [f"{_toml_string(table)} = {_toml_value(row)}"]
                continue
            lines.append(f"[[{table}]]" if table == "jobs" else f"[{_toml_string(table)}]")
            lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in row.items()
                      if v is not None]
    return "\n".join(lines) + "\n"


def _broken(edits) -> bool:
    try:
        from_dict(tomllib.loads(to_toml(mutate(edits))), "fuzz")
    except (SpecError, TopologyError):
        return True
    return False


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(EDITS.filter(_broken))
def test_twenty_broken_specs_through_the_cli_get_one_line_and_start_nothing(
        monkeypatch, capsys, tmp_path, edits):
    from experiments.cli import main as cli

    def forbidden(*_args, **_kwargs):
        raise AssertionError("started despite an invalid spec")

    monkeypatch.setattr("fabric.net.network.require_root", forbidden)
    monkeypatch.setattr("experiments.runner.run", forbidden)
    spec = tmp_path / "spec.toml"
    spec.write_text(to_toml(mutate(edits)), encoding="utf-8")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["railcc", "run", str(spec), "-o", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("railcc: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_a_spec_that_is_not_utf8_gets_one_line_through_the_cli(monkeypatch, capsys, tmp_path):
    from experiments.cli import main as cli

    spec = tmp_path / "spec.toml"
    spec.write_bytes(to_toml(BASE).encode() + b"# caf\xe9\n")  # Latin-1, as an editor may save
    monkeypatch.setattr(sys, "argv", ["railcc", "run", str(spec), "-o", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and "not UTF-8" in err, err
    assert not (tmp_path / "out").exists()
