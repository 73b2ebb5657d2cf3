"""Resolve a user's topology argument: a preset name or a TOML/JSON file with a fabric.

A file holds either a [topology] table (as in an experiment spec, whose other
tables are ignored here) or the fabric's keys at the top level; either way the
keys are those of `topologies.presets.TopologyTable`: ``preset = NAME`` plus
overrides, or an inline fabric with a ``name``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from topologies import FabricSpec, TopologyError, preset
from topologies.presets import from_table


def resolve(argument: str) -> FabricSpec:
    """A preset name, or a path to a .toml/.json file with a [topology] table or plain keys."""
    path = Path(argument)
    if path.suffix not in (".toml", ".json"):
        return preset(argument)
    if not path.is_file():
        raise TopologyError(f"{argument}: no such file")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise TopologyError(f"{argument}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if isinstance(data, dict) and "topology" in data:
        return from_table(data["topology"], where="topology")
    return from_table(data)
