"""The JSON Schema of spec files (`railcc spec schema`): it accepts what the models accept.

jsonschema is not installed here, so `conforms` checks the few keywords the generated
schema uses (a test below fails when it starts using others).
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from experiments.cli.main import app
from experiments.workload.spec import SpecError, SpecFile, from_dict, json_schema

SPECS = sorted((Path(__file__).parents[3] / "experiments" / "specs").glob("*.toml"))
SCHEMA = json_schema()
#: A spec with every table; each table's key given a value of the wrong type.
FULL = {"experiment": {"name": "t", "seed": 1}, "topology": {"preset": "rail-2tier-small"},
        "controller": {"algorithm": "ecmp"}, "transport": {"kind": "roce"},
        "telemetry": {"rate_hz": 10}, "limits": {"run_timeout_s": 60},
        "emulator": {"ovs_shards": 2, "ovs_allocator": "glibc"},
        "dcqcn": {"kmin_bytes": 9000, "pmax": 0.1}, "swift": {"hop_target_frames": 1.0},
        "jobs": [{"collective": "allreduce", "servers": 4, "sizes": ["1MB"]}],
        "faults": [{"kind": "link-down", "link": "t0r0-s0", "at": "300ms"}]}
WRONG_TYPE = {"experiment": ("seed", "1"), "topology": ("rails", "4"),
              "controller": ("stats_interval_ms", "fast"), "jobs": ("iterations", "two"),
              "transport": ("window_packets", 3.5), "telemetry": ("delay_sample_every", True),
              "limits": ("run_timeout_s", [60]), "emulator": ("ovs_shards", "2"),
              "dcqcn": ("pmax", "high"), "swift": ("beta", "half"), "faults": ("count", "3")}
KEYWORDS = {"$schema", "$defs", "$ref", "title", "description", "default", "type", "properties",
            "additionalProperties", "required", "anyOf", "enum", "const", "items", "minItems",
            "minimum", "maximum", "exclusiveMinimum", "pattern", "maxLength"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
         "integer": int, "number": (int, float)}


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` satisfies ``schema`` (the keywords in KEYWORDS; refs into SCHEMA)."""
    if "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    kind = TYPES.get(schema.get("type"), object)
    if not isinstance(value, kind) or (isinstance(value, bool) and schema.get("type") not in
                                       (None, "boolean")):
        return False
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = [
        "anyOf" not in schema or any(conforms(value, s) for s in schema["anyOf"]),
        "enum" not in schema or value in schema["enum"],
        "const" not in schema or value == schema["const"],
        not number or value >= schema.get("minimum", value),
        not number or value <= schema.get("maximum", value),
        not number or "exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"],
        not isinstance(value, str) or re.search(schema.get("pattern", ""), value) is not None,
        not isinstance(value, str) or len(value) <= schema.get("maxLength", len(value)),
        not isinstance(value, list) or len(value) >= schema.get("minItems", 0),
        not isinstance(value, list) or all(conforms(v, schema.get("items", {})) for v in value),
        not isinstance(value, dict) or all(key in value for key in schema.get("required", [])),
        not isinstance(value, dict) or schema.get("additionalProperties", True) or all(
            key in schema.get("properties", {}) for key in value),
        not isinstance(value, dict) or all(conforms(v, schema["properties"][k])
                                           for k, v in value.items()
                                           if k in schema.get("properties", {})),
    ]
    return all(checks)


def _keywords(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*map(_keywords, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set(node) - {"properties", "$defs"}
    for key, value in node.items():
        children = value.values() if key in ("properties", "$defs") else [value]
        if key not in ("default", "enum", "const", "required"):
            found |= set().union(*map(_keywords, children))
    return found


def _table(data: dict, table: str) -> dict:
    return data[table][0] if table in ("jobs", "faults") else data[table]


def test_schema_uses_only_the_keywords_the_checker_knows():
    assert _keywords(SCHEMA) <= KEYWORDS


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_schema_accepts_every_shipped_spec(path):
    data = tomllib.loads(path.read_text())
    assert conforms(data, SCHEMA)
    written = SpecFile.model_validate(data).model_dump(exclude_unset=True)
    assert conforms(written, SCHEMA) and from_dict(written) == from_dict(data)  # round trip


def test_every_table_is_closed_and_lists_the_models_keys():
    assert SCHEMA["additionalProperties"] is False and set(SCHEMA["properties"]) == set(FULL)
    assert set(SCHEMA["required"]) == {"experiment", "topology", "jobs"}
    for table, field in SpecFile.model_fields.items():
        model = field.annotation.__args__[0] if table in ("jobs", "faults") else \
            field.annotation
        definition = SCHEMA["$defs"][model.__name__]
        assert definition["additionalProperties"] is False, table
        assert list(definition["properties"]) == list(model.model_fields), table


@pytest.mark.parametrize("table", list(FULL))
def test_unknown_key_is_rejected_in_every_table(table):
    data = copy.deepcopy(FULL)
    _table(data, table)["colour"] = "red"
    assert conforms(FULL, SCHEMA) and not conforms(data, SCHEMA)
    where = f"{table}[0]" if table in ("jobs", "faults") else table
    with pytest.raises(SpecError, match=rf"^{re.escape(where)}\.colour: unknown key \(known: "):
        from_dict(data)


@pytest.mark.parametrize("table", list(FULL))
def test_wrong_type_is_rejected_in_every_table(table):
    key, value = WRONG_TYPE[table]
    data = copy.deepcopy(FULL)
    _table(data, table)[key] = value
    assert not conforms(data, SCHEMA)
    where = f"{table}[0]" if table in ("jobs", "faults") else table
    with pytest.raises(SpecError, match=rf"^{re.escape(where)}\.{key}: must be "):
        from_dict(data)


def test_topology_needs_a_preset_or_a_name():
    data = copy.deepcopy(FULL)
    data["topology"] = {"rails": 2}
    assert not conforms(data, SCHEMA)
    with pytest.raises(SpecError, match=r"^topology\.name: required$"):
        from_dict(data)
    data["topology"] = {"name": "mine", "rails": 2}
    assert conforms(data, SCHEMA) and from_dict(data).fabric.rails == 2


def test_cli_prints_the_schema_as_json():
    result = CliRunner().invoke(app, ["spec", "schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(SCHEMA))
