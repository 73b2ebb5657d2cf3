"""The fidelity verdict: CPU-bound or slow links make a run untrusted, with the reason."""

from fabric.fidelity import PortInterval, rate_shortfalls, verdict


def test_idle_machine_and_full_rate_links_are_trusted():
    intervals = [PortInterval("p1", 0.1, 125_000, 10.0, True)]  # exactly 10 Mb/s
    assert rate_shortfalls(intervals) == []
    assert verdict([0.3] * 20, [0.2] * 20, []) == (True, [])


def test_backlogged_port_below_rate_is_a_shortfall():
    intervals = ([PortInterval("p1", 0.1, 100_000, 10.0, True)] * 6      # 8 Mb/s, 0.6 s
                 + [PortInterval("p2", 0.1, 10_000, 10.0, False)] * 6    # idle: fine
                 + [PortInterval("p3", 0.1, 120_000, 10.0, True)] * 6    # 9.6 Mb/s: within 5 %
                 + [PortInterval("p4", 0.1, 50_000, 10.0, True)] * 3)    # too short to judge
    found = rate_shortfalls(intervals)
    assert found == ["p1 sent 80 % of its rate while backlogged"]
    trusted, reasons = verdict([0.2], [0.1], found)
    assert not trusted and "link rates off by more than 5 %" in reasons[0]


def test_stretches_break_where_the_queue_drained():
    half = PortInterval("p1", 0.1, 100_000, 10.0, True)
    idle = PortInterval("p1", 0.1, 0, 10.0, False)
    assert rate_shortfalls([half] * 4 + [idle] + [half] * 4) == []
    assert rate_shortfalls([half] * 9) != []


def test_cpu_bound_machine_is_untrusted_beyond_the_allowance():
    assert verdict([0.97] + [0.5] * 19, [0.1] * 20, [])[0]       # one blip allowed
    assert verdict([0.93] * 20, [0.1] * 20, [])[0]               # busy is not saturated
    trusted, reasons = verdict([0.97] * 10 + [0.5] * 10, [0.1] * 20, [])
    assert not trusted and reasons[0].startswith("CPU-bound: machine over 95% busy in 10 of 20")


def test_saturated_datapath_thread_is_untrusted():
    trusted, reasons = verdict([0.5] * 10, [0.99] * 10, [])
    assert not trusted and reasons[0].startswith("datapath-bound: ovs-vswitchd")
