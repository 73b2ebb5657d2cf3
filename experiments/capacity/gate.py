"""Before `railcc run` / `railcc ab` build anything: is the spec within this machine's capacity?"""

from __future__ import annotations

from experiments.capacity.cache import CACHE_FILE, admission, lookup
from experiments.workload.spec import Experiment
from fabric.measure.machine import machine_info


class OverCapacity(Exception):
    """The spec asks for more than the cached trusted capacity (the message says how much)."""


def gate(experiment: Experiment, force: bool, cache_file=CACHE_FILE) -> str | None:
    """OverCapacity if the spec is over the cached capacity and not forced; when forced,
    the refusal text (the run records it and is untrusted); None when within capacity
    or nothing was measured for this fabric on this machine."""
    refusal = admission(experiment.fabric, lookup(experiment.fabric, machine_info(), cache_file),
                        experiment.max_offered_fraction)
    if refusal and not force:
        raise OverCapacity(refusal)
    return refusal
