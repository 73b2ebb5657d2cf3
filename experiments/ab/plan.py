"""An A/B plan: which algorithms, how many repetitions, which baseline (validated options).

The campaign that executes a plan is `experiments.ab.campaign`.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.algorithms.registry import ALGORITHMS

MAX_REPEAT = 100


class PlanError(ValueError):
    """Invalid --algos / --repeat / --baseline; the one-line message names the option."""


@dataclass(frozen=True)
class Plan:
    """Which algorithms, how many repetitions, and which algorithm is the baseline."""

    algorithms: tuple[str, ...]
    repeat: int
    baseline: str

    def order(self) -> list[tuple[int, str]]:
        """(repetition, algorithm) in run order: every algorithm once per repetition."""
        return [(rep, algo) for rep in range(self.repeat) for algo in self.algorithms]


def make_plan(algos: str | None, repeat: str | int, baseline: str | None) -> Plan:
    """Validate the options into a Plan (None algos: all of `ALGORITHMS`)."""
    names = [a.strip() for a in algos.split(",")] if algos is not None else list(ALGORITHMS)
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
    if baseline is None:
        baseline = "ecmp" if "ecmp" in names else names[0]
    elif baseline not in names:
        raise PlanError(f"--baseline: {baseline!r} is not among --algos ({', '.join(names)})")
    return Plan(tuple(names), count, baseline)
