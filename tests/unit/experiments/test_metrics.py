"""Run metrics on synthetic records whose right answers are worked out by hand."""

import pytest

from experiments.analysis import metrics as m
from experiments.workload.collectives import ALL2ALL, ALLREDUCE, SENDRECV


def test_algbw_busbw_and_efficiency():
    # 8 ranks, 1 MB AllReduce in 10 ms: algbw 1e8 B/s, busbw x 14/8.
    assert m.algbw(1_000_000, 0.01) == pytest.approx(1e8)
    assert m.busbw(1_000_000, 0.01, ALLREDUCE, 8) == pytest.approx(1.75e8)
    assert m.busbw(1_000_000, 0.01, ALL2ALL, 4) == pytest.approx(0.75e8)
    assert m.busbw(1_000_000, 0.01, SENDRECV, 2) == pytest.approx(1e8)
    # 1e6 B/s = 8 Mbit/s on a 10 Mbit/s NIC -> 80 %; over 4 rails -> 20 %.
    assert m.efficiency(1e6, 10.0) == pytest.approx(0.8)
    assert m.efficiency(1e6, 10.0, rails=4) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="time"):
        m.algbw(1, 0)
    with pytest.raises(ValueError, match="line rate"):
        m.efficiency(1, 0)


def test_percentiles_linear_interpolation():
    tail = m.percentiles(range(1, 101))  # 1..100
    assert tail.p50 == pytest.approx(50.5)
    assert tail.p99 == pytest.approx(99.01)  # rank 0.99 * 99 = 98.01 -> 99 + 0.01
    assert tail.p999 == pytest.approx(99.901)
    assert (tail.count, tail.mean, tail.max) == (100, pytest.approx(50.5), 100)
    single = m.percentiles([7.0])
    assert single.p50 == single.p999 == 7.0
    with pytest.raises(ValueError, match="no values"):
        m.percentiles([])


def test_loss_counts_switch_drops_and_retransmits():
    result = m.loss(sent=1000, switch_drops=[3, 0, 7], retransmitted=[20, 5])
    assert (result.dropped, result.retransmitted) == (10, 25)
    assert result.loss_rate == pytest.approx(0.01)
    assert result.retransmit_rate == pytest.approx(0.025)
    assert m.loss(0, []).loss_rate == 0.0


def test_utilization_series_from_cumulative_counters():
    samples = [m.CounterSample("t0r0p5", t, b) for t, b in
               [(1.0, 1_250_000), (0.0, 0), (2.0, 1_875_000)]]  # unsorted on purpose
    series = m.utilization_series(samples, capacity_mbps=10.0)
    # 1.25 MB in 1 s = 10 Mbit/s = 100 %; then 0.625 MB = 50 %.
    assert [(p.start_s, p.end_s) for p in series] == [(0.0, 1.0), (1.0, 2.0)]
    assert [p.utilization for p in series] == pytest.approx([1.0, 0.5])
    assert m.mean_utilization(series) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="went backwards"):
        m.utilization_series(samples + [m.CounterSample("t0r0p5", 3.0, 5)], 10.0)
    with pytest.raises(ValueError, match="two samples"):
        m.utilization_series(samples + [m.CounterSample("t0r0p5", 2.0, 2_000_000)], 10.0)


def test_imbalance_definitions():
    even = m.imbalance([0.5, 0.5, 0.5, 0.5])
    assert (even.max_over_mean, even.cov) == (0.0, 0.0)
    skewed = m.imbalance([1.0, 0.0, 0.5, 0.5])  # mean 0.5, std sqrt(0.125)
    assert skewed.max_over_mean == pytest.approx(1.0)
    assert skewed.cov == pytest.approx(0.125 ** 0.5 / 0.5)
    assert m.imbalance([0, 0]) == m.Imbalance(0.0, 0.0)


def _series(utils):
    return [m.UtilPoint(float(i), float(i + 1), u) for i, u in enumerate(utils)]


def test_tier_summaries_per_tier_with_uplink_imbalance():
    series = {"up1": _series([1.0, 1.0]), "up2": _series([0.0, 0.0]),
              "host1": _series([0.5, 0.25])}
    tiers = {"up1": "tor-spine", "up2": "tor-spine", "host1": "host"}
    summary = m.tier_summaries(series, tiers)
    up = summary["tor-spine"]
    assert (up.links, up.mean, up.max) == (2, pytest.approx(0.5), 1.0)
    assert up.imbalance.max_over_mean == pytest.approx(1.0)  # one link idle, one full
    host = summary["host"]
    assert (host.mean, host.max, host.imbalance.cov) == (pytest.approx(0.375), 0.5, 0.0)
    assert host.p99 == pytest.approx(0.25 + 0.99 * 0.25)
    with pytest.raises(ValueError, match="no tier for link 'up1'"):
        m.tier_summaries(series, {"up2": "x", "host1": "y"})


def test_link_utilization_needs_every_capacity():
    samples = [m.CounterSample("a", 0.0, 0), m.CounterSample("a", 1.0, 125_000),
               m.CounterSample("b", 0.0, 0), m.CounterSample("b", 1.0, 0)]
    result = m.link_utilization(samples, {"a": 1.0, "b": 10.0})
    assert result["a"][0].utilization == pytest.approx(1.0)
    assert result["b"][0].utilization == 0.0
    with pytest.raises(ValueError, match="'b'"):
        m.link_utilization(samples, {"a": 1.0})


def test_cct_is_first_start_to_last_end_per_iteration():
    records = [m.MessageRecord(0, 0.0, 1.0), m.MessageRecord(0, 0.2, 1.5),
               m.MessageRecord(1, 2.0, 2.5), m.MessageRecord(1, 1.9, 2.1)]
    assert m.cct_per_iteration(records) == {0: pytest.approx(1.5), 1: pytest.approx(0.6)}
    with pytest.raises(ValueError, match="iteration 3"):
        m.cct_per_iteration([m.MessageRecord(3, 2.0, 1.0)])


def test_the_wire_ceiling_is_message_bytes_per_link_byte_of_a_full_frame():
    from fabric.nic import wire
    from fabric.nic.pacing import wire_bytes
    from experiments.analysis.metrics import wire_ceiling
    # 9000-byte IP packets: 68 bytes of IPv4 / UDP / BTH / header / ICRC, 14 of Ethernet.
    assert wire.max_padding(9000) == 9000 - wire.DATA_OVERHEAD
    assert wire_ceiling(9000) == pytest.approx((9000 - wire.DATA_OVERHEAD) / wire_bytes(9000))
    assert 0.98 < wire_ceiling(9000) < 0.995 and wire_ceiling(1500) < wire_ceiling(9000)
