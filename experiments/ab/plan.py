"""An A/B plan: which arms (algorithms, or algorithms x spec variants), how many
repetitions, which baseline (validated options).

Without ``--vary`` every arm is one algorithm, labelled by its name. With
``--vary TABLE.KEY=v1,v2`` every algorithm runs once per value of that spec
key, and the arm ``adaptive nic=python`` is `adaptive` on the spec with
``[transport] nic = "python"``. The campaign that executes a plan is
`experiments.ab.campaign`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Mapping

from controllers.algorithms.registry import ALGORITHMS, ALIASES

MAX_REPEAT = 100
_KEY = re.compile(r"[a-z_]+\.[a-z_]+")


class PlanError(ValueError):
    """Invalid --algos / --repeat / --baseline / --vary; the one-line message names the option."""


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: an algorithm, and the spec key set for it (if varied)."""

    label: str
    algorithm: str
    key: str | None = None
    value: Any = None

    @property
    def folder(self) -> str:
        """The arm's folder name in the A/B folder (its label, path-safe)."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "-", self.label)

    def apply(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the spec mapping ``data`` with this arm's key set (the same if none)."""
        changed = copy.deepcopy(dict(data))
        if self.key is not None:
            table, name = self.key.split(".")
            section = changed.setdefault(table, {})
            if not isinstance(section, dict):
                raise PlanError(f"--vary {self.key}: [{table}] is not a table in the spec")
            section[name] = self.value
        return changed


@dataclass(frozen=True)
class Plan:
    """Which arms, how many repetitions, and which arm is the baseline."""

    arms: tuple[Arm, ...]
    repeat: int
    baseline: str
    vary: str | None = None

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The arms' labels, in order (the names ab.json groups runs by)."""
        return tuple(arm.label for arm in self.arms)

    def arm(self, label: str) -> Arm:
        """The arm labelled ``label``."""
        return next(arm for arm in self.arms if arm.label == label)

    def order(self) -> list[tuple[int, str]]:
        """(repetition, arm label) in run order: every arm once per repetition."""
        return [(rep, arm.label) for rep in range(self.repeat) for arm in self.arms]


def parse_value(text: str) -> Any:
    """A --vary value as TOML would read it: integer, float, true/false, else a string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def parse_vary(vary: str) -> tuple[str, list[Any]]:
    """``"transport.nic=python,compiled"`` -> ("transport.nic", ["python", "compiled"])."""
    key, sep, values = vary.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise PlanError(f"--vary: expected TABLE.KEY=v1,v2 (e.g. transport.nic=python,compiled), "
                        f"got {vary!r}")
    items = [v.strip() for v in values.split(",")]
    if len(items) < 2 or any(not v for v in items):
        raise PlanError(f"--vary {key}: give two or more non-empty values, got {values!r}")
    if len(set(items)) < len(items):
        raise PlanError(f"--vary {key}: a value is given twice in {values!r}")
    return key, [parse_value(v) for v in items]


def make_plan(algos: str | None, repeat: str | int, baseline: str | None,
              vary: str | None = None) -> Plan:
    """Validate the options into a Plan (None algos: all of `ALGORITHMS`)."""
    names = ([a.strip() for a in algos.split(",")] if algos is not None
             else [name for name in ALGORITHMS if name not in ALIASES])
    if not names or any(not name for name in names):
        raise PlanError(f"--algos: empty algorithm name in {algos!r} "
                        f"(known: {', '.join(ALGORITHMS)})")
    for name in names:
        if name not in ALGORITHMS:
            raise PlanError(f"--algos: unknown algorithm {name!r} "
                            f"(known: {', '.join(ALGORITHMS)})")
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice:
        raise PlanError(f"--algos: {twice!r} is given twice")
    try:
        count = int(str(repeat).strip())
    except ValueError:
        raise PlanError(f"--repeat: must be an integer 1..{MAX_REPEAT}, got {repeat!r}") from None
    if not 1 <= count <= MAX_REPEAT:
        raise PlanError(f"--repeat: must be 1..{MAX_REPEAT}, got {count}")
    if vary is None:
        arms = tuple(Arm(name, name) for name in names)
    else:
        key, values = parse_vary(vary)
        short = key.split(".")[1]
        arms = tuple(Arm(f"{name} {short}={value}", name, key, value)
                     for name in names for value in values)
    labels = [arm.label for arm in arms]
    if baseline is None:
        baseline = "ecmp" if "ecmp" in labels else labels[0]
    elif baseline not in labels:
        among = "--algos" if vary is None else "the arms"
        raise PlanError(f"--baseline: {baseline!r} is not among {among} ({', '.join(labels)})")
    return Plan(arms, count, baseline, vary)
