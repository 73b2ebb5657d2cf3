"""DCQCN's pieces (fabric/nic/dcqcn.py): RED's profile, the seeded draw, the receiver's
marking and CNP interval, and the sender's rate machine."""

from __future__ import annotations

import pytest

from fabric.nic.dcqcn import DcqcnParams, DcqcnRate, Marker, draw, mark_probability

P = DcqcnParams(kmin_bytes=10_000, kmax_bytes=50_000, pmax=0.2, cnp_interval_ms=20.0, g=1 / 16,
                alpha_timer_ms=10.0, increase_timer_ms=10.0, fast_recovery_steps=5,
                rai_fraction=0.05)
MS = 1_000_000


def test_red_profile_is_zero_below_kmin_linear_to_pmax_and_one_above_kmax():
    assert mark_probability(9_999, P) == 0.0
    assert mark_probability(10_000, P) == 0.0
    assert mark_probability(30_000, P) == pytest.approx(0.1)
    assert mark_probability(49_999, P) == pytest.approx(0.2, abs=1e-4)
    assert mark_probability(50_000, P) == 1.0


def test_the_draw_is_uniform_and_differs_per_qp_and_count():
    values = [draw(3, 0x0A000001, 77, count) for count in range(20_000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.01
    assert sum(v < 0.1 for v in values) == pytest.approx(2_000, rel=0.1)
    assert draw(3, 0x0A000001, 77, 5) != draw(3, 0x0A000001, 78, 5) != draw(4, 0x0A000001, 77, 5)


def test_the_receiver_marks_by_queueing_delay_at_most_once_per_interval():
    marker = Marker(P, line_mbps=10.0, salt=1)  # 1.25 bytes per us
    src, qp = 0x0A000001, 9
    assert not marker.on_frame(src, qp, 30 * MS, 0)  # the base delay: no queue
    # 60 ms more than the base = 75 kB of queue, above kmax: always marked...
    assert marker.on_frame(src, qp, 90 * MS, 1 * MS)
    # ... but one CNP per 20 ms per QP
    assert not marker.on_frame(src, qp, 90 * MS, 10 * MS)
    assert marker.on_frame(src, qp, 90 * MS, 21 * MS)
    assert marker.on_frame(src, qp + 1, 90 * MS, 21 * MS) is False  # its own base: no queue
    assert not marker.on_frame(src, qp, 35 * MS, 100 * MS)  # 6 kB: below kmin
    # between kmin and kmax, the share of marked frames follows the profile
    hits = 0
    for salt in range(4_000):
        m = Marker(P, 10.0, salt)
        m.on_frame(src, qp, 0, 0)
        hits += m.on_frame(src, qp, 24 * MS, 0)  # 30 kB: p = 0.1
    assert hits == pytest.approx(400, rel=0.2)


def test_a_cnp_cuts_by_alpha_over_two_and_alpha_learns():
    rate = DcqcnRate(10.0, P)
    rate.on_cnp(0)
    assert rate.current_mbps == pytest.approx(5.0) and rate.target_mbps == 10.0  # alpha 1
    assert rate.alpha == pytest.approx(1.0)  # (1 - g) * 1 + g
    rate.recover(10 * MS)  # one alpha period and one increase: fast recovery
    assert rate.alpha == pytest.approx(15 / 16)
    assert rate.current_mbps == pytest.approx(7.5)
    rate.on_cnp(11 * MS)
    assert rate.target_mbps == pytest.approx(7.5)
    assert rate.current_mbps == pytest.approx(7.5 * (1 - (15 / 16) / 2))
    assert rate.alpha == pytest.approx((15 / 16) * (15 / 16) + 1 / 16)


def test_after_fast_recovery_the_target_climbs_additively_until_line_rate():
    rate = DcqcnRate(10.0, P)
    rate.on_cnp(0)  # current 5, target 10
    currents = []
    for step in range(1, 40):
        rate.recover(step * 10 * MS)
        currents.append(rate.current_mbps)
    assert currents[:5] == pytest.approx([7.5, 8.75, 9.375, 9.6875, 9.84375])
    assert currents == sorted(currents) and currents[-1] == 10.0
    assert rate.next_recovery is None  # recovered: the timers stop


def test_repeated_cnps_drive_the_rate_down_but_not_below_the_floor():
    rate = DcqcnRate(10.0, P)
    for step in range(200):
        rate.on_cnp(step * MS)
    assert rate.current_mbps == pytest.approx(10.0 * P.min_rate_fraction)
    assert rate.alpha == pytest.approx(1.0)


def test_a_repath_forgets_the_old_paths_cuts_and_returns_to_the_set_rate():
    rate = DcqcnRate(10.0, P)
    rate.set_target(8.0)  # the harness's rate, not line rate
    rate.on_cnp(0)
    rate.on_cnp(MS)
    assert rate.current_mbps < 4.0 and rate.next_recovery is not None
    rate.on_repath()
    assert rate.current_mbps == rate.target_mbps == 8.0
    assert rate.alpha == 1.0 and rate.next_recovery is None


def test_a_cnp_is_flagged_last_hop_when_another_qp_reached_the_nic_lately():
    marker = Marker(P, 10.0, salt=1)  # P: CNP interval 20 ms, so a 40 ms window
    marker.arrived(0, 1, 5, 0)
    assert not marker.last_hop(0, 1, 5, MS)  # only its own frames
    marker.arrived(1, 2, 6, MS)  # another QP, into another NIC
    assert not marker.last_hop(0, 1, 5, MS)
    marker.arrived(0, 2, 7, 10 * MS)  # another QP into this NIC: incast
    assert marker.last_hop(0, 1, 5, 20 * MS)
    assert not marker.last_hop(0, 1, 5, 51 * MS)  # it went quiet 41 ms ago
