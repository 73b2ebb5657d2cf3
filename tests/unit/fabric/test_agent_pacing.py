"""Token-bucket pacing math and the CNP rate reaction, with injected time."""

import pytest

from fabric.nic.pacing import (CNP_FLOOR_FRACTION, RECOVERY_PERIOD_NS, QpRate, TokenBucket,
                                 bytes_per_ns, wire_bytes)


def test_wire_bytes_adds_the_ethernet_header():
    assert wire_bytes(9000) == 9014


def test_bucket_starts_full_then_paces_at_the_rate():
    bucket = TokenBucket(10.0, 2 * 9014, now_ns=0)
    assert bucket.ready_at(9014, 0) == 0
    bucket.consume(9014)
    assert bucket.ready_at(9014, 0) == 0
    bucket.consume(9014)
    ready = bucket.ready_at(9014, 0)
    assert ready == pytest.approx(9014 * 8 / 10e6 * 1e9, abs=2)  # 7.2112 ms


def test_long_run_rate_is_exact():
    bucket, now, sent = TokenBucket(10.0, 2 * 9014, now_ns=0), 0, 0
    while now < 10**9:
        now = bucket.ready_at(9014, now)
        bucket.consume(9014)
        sent += 9014
    assert sent * 8 / (now / 1e9) / 1e6 == pytest.approx(10.0, rel=0.02)


def test_bucket_never_exceeds_its_burst():
    bucket = TokenBucket(10.0, 1000, now_ns=0)
    bucket.refill(10**12)
    assert bucket.tokens == 1000


def test_unpaced_acks_overdraw_the_bucket():
    bucket = TokenBucket(1.0, 100, now_ns=0)
    bucket.consume(162)
    assert bucket.tokens == -62
    assert bucket.ready_at(100, 0) == pytest.approx(162 / bytes_per_ns(1.0), abs=2)


def test_set_rate_keeps_tokens_earned_at_the_old_rate():
    bucket = TokenBucket(8.0, 10**6, now_ns=0)
    bucket.consume(10**6)
    bucket.set_rate(16.0, 1_000_000)  # 1 ms at 1 byte/us = 1000 bytes
    assert bucket.tokens == pytest.approx(1000)
    assert bucket.ready_at(3000, 1_000_000) == pytest.approx(2_000_000, abs=2)


@pytest.mark.parametrize("mbps", [0, -1])
def test_bucket_rejects_bad_rates(mbps):
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(mbps, 100, 0)


def test_cnp_halves_with_a_floor_and_recovers_additively():
    rate = QpRate(10.0)
    rate.on_cnp(0)
    assert rate.current_mbps == 5.0
    for _ in range(20):
        rate.on_cnp(0)
    assert rate.current_mbps == pytest.approx(10.0 * CNP_FLOOR_FRACTION)
    assert not rate.recover(RECOVERY_PERIOD_NS - 1)
    assert rate.recover(RECOVERY_PERIOD_NS)
    assert rate.current_mbps == pytest.approx(0.1 + 0.5)
    rate.recover(100 * RECOVERY_PERIOD_NS)
    assert rate.current_mbps == 10.0 and rate.next_recovery is None


def test_recovery_stops_at_the_granted_target():
    rate = QpRate(10.0)
    rate.set_target(4.0)
    rate.on_cnp(0)
    assert rate.current_mbps == 2.0
    rate.recover(10**12)
    assert rate.current_mbps == 4.0
