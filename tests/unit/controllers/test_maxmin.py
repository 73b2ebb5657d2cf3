"""Max-min fair allocation: known answers, bad input, and properties against a linear-programming reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from controllers.core.maxmin import link_loads, max_min_rates


def bottlenecks(paths, capacity, rates, tol=1e-6):
    """The test's oracle: each flow's first saturated link on which its rate is maximal, or None.

    Saturated means load >= capacity * (1 - tol); maximal means rate >=
    (largest rate on the link) * (1 - tol). A max-min fair flow that is not
    limited by its demand has one (the bottleneck property).
    """
    loads = link_loads(paths, rates)
    top = {}
    for flow, path in paths.items():
        for link in path:
            top[link] = max(top.get(link, -math.inf), rates[flow])
    return {flow: next((link for link in path if loads[link] >= capacity[link] * (1 - tol)
                        and rates[flow] >= top[link] * (1 - tol)), None)
            for flow, path in paths.items()}


def test_parking_lot_gives_everyone_half():
    capacity = {"a": 1.0, "b": 1.0, "c": 1.0}
    paths = {"long": ["a", "b", "c"], "sa": ["a"], "sb": ["b"], "sc": ["c"]}
    assert max_min_rates(paths, capacity) == pytest.approx(dict.fromkeys(paths, 0.5))


def test_narrow_link_caps_one_flow_and_the_other_takes_the_rest():
    paths = {"f1": ["wide", "narrow"], "f2": ["wide"]}
    rates = max_min_rates(paths, {"wide": 1.0, "narrow": 0.2})
    assert rates == pytest.approx({"f1": 0.2, "f2": 0.8})
    assert bottlenecks(paths, {"wide": 1.0, "narrow": 0.2}, rates) == {"f1": "narrow", "f2": "wide"}


def test_small_demands_are_met_and_the_rest_is_shared():
    paths = {"f1": ["l"], "f2": ["l"], "f3": ["l"], "f4": ["l", "m"]}
    capacity = {"l": 1.0, "m": 5.0}
    demand = {"f1": 0.1, "f2": 7.0}
    rates = max_min_rates(paths, capacity, demand)
    assert rates == pytest.approx({"f1": 0.1, "f2": 0.3, "f3": 0.3, "f4": 0.3})
    assert bottlenecks(paths, capacity, rates)["f1"] is None


def test_demand_equal_to_share_and_zero_capacity():
    paths = {"f1": ["l"], "f2": ["l"], "f3": ["z"], "f4": ["z", "l"]}
    rates = max_min_rates(paths, {"l": 1.0, "z": 0.0}, {"f1": 0.5})
    assert rates == pytest.approx({"f1": 0.5, "f2": 0.5, "f3": 0.0, "f4": 0.0})


def test_empty_path_gets_its_demand_or_infinity():
    rates = max_min_rates({"free": [], "capped": [], "f": ["l"]}, {"l": 2.0}, {"capped": 3.0})
    assert rates == {"free": math.inf, "capped": 3.0, "f": 2.0}


def test_many_ties_in_a_symmetric_fabric():
    capacity = {("up", h): 1.0 for h in range(64)} | {("spine", s): 16.0 for s in range(4)}
    paths = {h: [("up", h), ("spine", h % 4), ("up", (h + 1) % 64)] for h in range(64)}
    rates = max_min_rates(paths, capacity)
    assert set(rates.values()) == {0.5}
    assert list(rates) == list(paths)


def test_link_loads_sum_rates():
    loads = link_loads({"f1": ["a", "b"], "f2": ["b"]}, {"f1": 1.5, "f2": 2.0})
    assert loads == {"a": 1.5, "b": 3.5}


@pytest.mark.parametrize("paths, capacity, demand, message", [
    ({"f": ["a", "ghost"]}, {"a": 1.0}, None, r"paths\['f'\]: link 'ghost' has no capacity"),
    ({"f": ["a"]}, {"a": -1.0}, None, r"capacity\['a'\]: must be >= 0, got -1.0"),
    ({"f": ["a"]}, {"a": math.nan}, None, r"capacity\['a'\]: must be >= 0"),
    ({"f": ["a", "a"]}, {"a": 1.0}, None, r"paths\['f'\]: repeats a link"),
    ({"f": ["a"]}, {"a": 1.0}, {"g": 1.0}, r"demand\['g'\]: not a flow"),
    ({"f": ["a"]}, {"a": 1.0}, {"f": -0.5}, r"demand\['f'\]: must be >= 0"),
])
def test_bad_input_is_rejected_with_its_place(paths, capacity, demand, message):
    with pytest.raises(ValueError, match=message):
        max_min_rates(paths, capacity, demand)


@st.composite
def instances(draw, max_links=8, max_flows=10, integral=False):
    """A random small instance: ``(paths, capacity, demand)`` with 1..4 distinct links per flow."""
    links = [f"l{i}" for i in range(draw(st.integers(1, max_links)))]
    value = st.integers(1, 100).map(float) if integral else st.floats(1, 100)
    capacity = {link: draw(value) for link in links}
    path = st.lists(st.sampled_from(links), min_size=1, max_size=min(4, len(links)), unique=True)
    paths = {f"f{i}": draw(path) for i in range(draw(st.integers(1, max_flows)))}
    wish = st.integers(0, 60).map(float) if integral else st.floats(0, 60)
    demand = {flow: draw(wish) for flow in paths if draw(st.booleans())}
    return paths, capacity, draw(st.sampled_from([None, demand]))


@settings(max_examples=200, deadline=None)
@given(instances())
def test_rates_are_feasible_and_every_flow_is_bottlenecked_or_satisfied(instance):
    paths, capacity, demand = instance
    rates = max_min_rates(paths, capacity, demand)
    assert all(rate >= 0 for rate in rates.values())
    for link, load in link_loads(paths, rates).items():
        assert load <= capacity[link] * (1 + 1e-9)
    for flow, link in bottlenecks(paths, capacity, rates).items():
        wish = (demand or {}).get(flow, math.inf)
        assert rates[flow] <= wish
        assert link is not None or rates[flow] == pytest.approx(wish, rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(instances())
def test_rates_are_deterministic_and_independent_of_input_order(instance):
    paths, capacity, demand = instance
    rates = max_min_rates(paths, capacity, demand)
    assert max_min_rates(paths, capacity, demand) == rates
    shuffled = max_min_rates(dict(reversed(paths.items())), dict(reversed(capacity.items())), demand)
    assert shuffled == pytest.approx(rates, rel=1e-9)


def lp_max_min(paths, capacity, demand):
    """Reference max-min vector by a sequence of LPs: raise the floor t, freeze flows that cannot exceed it."""
    flows, links = list(paths), list(capacity)
    usage = np.zeros((len(links), len(flows) + 1))
    for j, flow in enumerate(flows):
        for link in paths[flow]:
            usage[links.index(link), j] = 1.0
    caps = np.array([capacity[link] for link in links])
    frozen: dict[int, float] = {}
    while len(frozen) < len(flows):
        free = [j for j in range(len(flows)) if j not in frozen]
        bounds = [(frozen[j], frozen[j]) if j in frozen else (0, demand.get(flows[j])) for j in range(len(flows))]
        floor = np.zeros((len(free), len(flows) + 1))
        for row, j in enumerate(free):
            floor[row, j], floor[row, -1] = -1.0, 1.0  # t - x_j <= 0
        objective = np.zeros(len(flows) + 1)
        objective[-1] = -1.0
        lifted = linprog(objective, A_ub=np.vstack([usage, floor]), b_ub=np.concatenate([caps, np.zeros(len(free))]),
                         bounds=bounds + [(0, None)], method="highs")
        assert lifted.status == 0, lifted.message
        level = -lifted.fun
        stuck = []
        for j in free:
            objective = np.zeros(len(flows) + 1)
            objective[j] = -1.0
            others = bounds + [(level * (1 - 1e-9), level * (1 - 1e-9))]
            stretched = linprog(objective, A_ub=np.vstack([usage, floor]),
                                b_ub=np.concatenate([caps, np.zeros(len(free))]), bounds=others, method="highs")
            assert stretched.status == 0, stretched.message
            if -stretched.fun <= level + 1e-7 * max(1.0, level):
                stuck.append(j)
        assert stuck, "no flow froze: numerical trouble in the reference"
        frozen.update(dict.fromkeys(stuck, level))
    return {flow: frozen[j] for j, flow in enumerate(flows)}


@settings(max_examples=40, deadline=None)
@given(instances(max_links=6, max_flows=7, integral=True))
def test_rates_match_the_linear_programming_reference(instance):
    paths, capacity, demand = instance
    expected = lp_max_min(paths, capacity, demand or {})
    assert max_min_rates(paths, capacity, demand) == pytest.approx(expected, rel=1e-6, abs=1e-9)
