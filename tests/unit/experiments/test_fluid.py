"""The fluid max-min estimate (experiments.analysis.fluid) and the datapath-flow parser it
reads paths from (fabric.measure.paths)."""

import pytest

from experiments.analysis import fluid
from fabric.measure.paths import parse_hops

C = 1000.0   # bytes/s of every link in these examples
S = 500.0    # bytes of a transfer


def transfer(tid, src="a", dst="b", after=(), size=S, iteration=0, job="j"):
    return {"id": tid, "src_ip": src, "dst_ip": dst, "after": list(after), "size": size,
            "phase": 0, "iteration": iteration, "job": job, "kind": "sendrecv",
            "src": src, "dst": dst, "src_rail": 0, "dst_rail": 0}


def test_two_transfers_hashed_onto_one_link_share_it_and_apart_do_not():
    capacity = {"x": C, "y": C, "up": C}
    both = fluid.round_times([transfer(1), transfer(2)], {1: [["x", "up"]], 2: [["y", "up"]]},
                             capacity)
    assert both == {1: (0.0, pytest.approx(2 * S / C)), 2: (0.0, pytest.approx(2 * S / C))}
    apart = fluid.round_times([transfer(1), transfer(2)], {1: [["x"]], 2: [["y"]]}, capacity)
    assert apart[1][1] == pytest.approx(S / C) and apart[2][1] == pytest.approx(S / C)


def test_a_finished_flow_hands_its_share_to_the_rest():
    # 500 B and 1000 B on one link: both at C/2 until the first ends at 2S/C, then the
    # second alone at C for its last S.
    times = fluid.round_times([transfer(1), transfer(2, size=2 * S)], {1: [["x"]], 2: [["x"]]},
                              {"x": C})
    assert times[1][1] == pytest.approx(2 * S / C) and times[2][1] == pytest.approx(3 * S / C)


def test_a_transfer_waits_for_the_ones_it_comes_after_and_qps_split_its_bytes():
    # Transfer 2 follows 1; its bytes go half over each of its two QPs' paths.
    times = fluid.round_times([transfer(1), transfer(2, after=[1])],
                              {1: [["x"]], 2: [["x"], ["y"]]}, {"x": C, "y": C})
    assert times[2][0] == pytest.approx(S / C)
    assert times[2][1] == pytest.approx(S / C + S / 2 / C)
    with pytest.raises(ValueError, match="wait on each other"):
        fluid.round_times([transfer(1, after=[2]), transfer(2, after=[1])],
                          {1: [["x"]], 2: [["x"]]}, {"x": C})


def test_a_transfer_after_several_starts_when_the_last_of_them_ends_even_through_empty_ones():
    # 3 follows 1 (S on x) and 2 (2S on y); 4 is empty and follows 3; 5 follows 4 and 1.
    times = fluid.round_times(
        [transfer(1), transfer(2, size=2 * S), transfer(3, after=[1, 2]),
         transfer(4, after=[3], size=0), transfer(5, after=[4, 1])],
        {1: [["x"]], 2: [["y"]], 3: [["x"]], 4: [["x"]], 5: [["y"]]}, {"x": C, "y": C})
    assert times[3] == (pytest.approx(2 * S / C), pytest.approx(3 * S / C))
    assert times[4] == (pytest.approx(3 * S / C), pytest.approx(3 * S / C))
    assert times[5] == (pytest.approx(3 * S / C), pytest.approx(4 * S / C))


def test_only_complete_data_flows_are_paths_and_a_missing_one_gives_no_estimate():
    flows = [{"round": 1, "src_ip": "a", "dst_ip": "b", "links": ["x"], "nodes": ["A", "B"],
              "packets": 10, "bytes": 90_000, "complete": True},
             {"round": 1, "src_ip": "b", "dst_ip": "a", "links": ["x"], "nodes": ["B", "A"],
              "packets": 10, "bytes": 600, "complete": True},   # ACKs
             {"round": 1, "src_ip": "a", "dst_ip": "c", "links": ["z"], "nodes": ["A", "C"],
              "packets": 10, "bytes": 90_000, "complete": False}]  # a hop idled out
    assert fluid.data_paths(flows) == {(1, "a", "b"): [["x>A"]]}
    capacity = fluid.capacities([("x", "A", "B", C), ("z", "A", "C", C)])
    assert capacity == {"x>A": C, "x>B": C, "z>A": C, "z>C": C}
    assert fluid.estimate([transfer(1)], flows, capacity) == {1: pytest.approx(S / C)}
    assert fluid.estimate([transfer(1, dst="c")], flows, capacity) is None


def test_a_full_duplex_link_carries_both_directions_at_its_rate():
    # A ring's hops: a NIC's link carries its send and its receive, each at line rate.
    flows = [{"round": 1, "src_ip": s, "dst_ip": d, "links": ["x"], "nodes": [s.upper(), d.upper()],
              "packets": 10, "bytes": 90_000, "complete": True} for s, d in (("a", "b"), ("b", "a"))]
    capacity = fluid.capacities([("x", "A", "B", C)])
    done = fluid.estimate([transfer(1), transfer(2, src="b", dst="a")], flows, capacity)
    assert done == {1: pytest.approx(S / C), 2: pytest.approx(S / C)}


def test_job_rows_count_the_estimate_as_the_runs_rows_do():
    transfers = [transfer(1, iteration=0), transfer(2, iteration=1)]
    (row,) = fluid.job_rows(transfers, {1: 1.0, 2: 3.0}, nic_mbps=8e-6 * S)
    assert row["time_ms"] == pytest.approx(2000.0)   # mean of the iterations' ends
    # 500 B in 2 s is 250 B/s of a 500 B/s NIC (sendrecv: busbw = algbw)
    assert row["busbw_Mbps"] == pytest.approx(250 * 8 / 1e6) and row["efficiency"] == pytest.approx(0.5)


DUMP = """\
recirc_id(0),in_port(rc1-t0r0p4),packet_type(ns=0,id=0),eth_type(0x0800),ipv4(src=10.0.0.4,dst=10.0.1.1,proto=17,frag=no),udp(src=65075,dst=4791), packets:55, bytes:433078, used:0.087s, actions:rc1-t0r0p7
recirc_id(0),in_port(rc1-s3p4),packet_type(ns=0,id=0),eth_type(0x0800),ipv4(dst=10.3.1.4/255.255.255.0,frag=no), packets:13, bytes:806, used:0.082s, actions:rc1-s3p8
recirc_id(0),in_port(rc1-t0r0p4),eth_type(0x0806), packets:1, bytes:42, used:5.1s, actions:userspace(pid=0,controller(reason=1))
recirc_id(0),in_port(rc1-t0r0p4),packet_type(ns=0,id=0),eth_type(0x0800),ipv4(src=10.0.0.4,dst=10.0.0.9,proto=6,frag=no), packets:3, bytes:180, used:0.1s, actions:rc1-t0r0p7
"""


def test_datapath_flows_give_each_tuples_input_and_output():
    # As OVS dumps them: a ToR's hashing flow is exact on the 5-tuple, a spine's route
    # matches the destination prefix only; ARP and TCP are not followed.
    hops = parse_hops(DUMP, {"rc1-t0r0p4", "rc1-t0r0p7", "rc1-s3p4", "rc1-s3p8"})
    assert [(h.in_intf, h.out_intf, h.packets, h.bytes) for h in hops] == [
        ("rc1-t0r0p4", "rc1-t0r0p7", 55, 433078), ("rc1-s3p4", "rc1-s3p8", 13, 806)]
    tor, spine = hops
    assert tor.key() == ("10.0.0.4", "10.0.1.1", 65075, 4791) and spine.key() is None
    assert spine.matches(("10.0.0.4", "10.3.1.77", 65075, 4791))
    assert not spine.matches(("10.0.0.4", "10.3.2.4", 65075, 4791))
    assert parse_hops(DUMP, {"rc1-t0r0p4"}) == []   # an output outside the fabric


def test_a_path_is_followed_on_the_datapath_flows_used_last(monkeypatch):
    # h1 -> h5 on rail 0 of rail-2tier-small: the ToR hashed it to s0 before a link
    # change and to s1 since (the s0 datapath flow lingers, used 2 s ago); s1 routes on
    # the destination prefix, t1r0 delivers it. The path follows what was used last.
    from fabric.measure import paths as recorded
    from topologies import load
    topology = load("rail-2tier-small")
    src = next(n for n in topology.nics if n.server == "h1" and n.rail == 0)
    dst = next(n for n in topology.nics if n.server == "h5" and n.rail == 0)
    port = {}
    for link in topology.links:
        for near, far in ((link.a, link.b), (link.b, link.a)):
            port[(near.node, far.node)] = near.port
    intfs = {(node, number): f"{node}p{number}" for (node, _), number in port.items()
             if not node.startswith("h")}
    tuple_ = f"ipv4(src={src.ip},dst={dst.ip},proto=17,frag=no),udp(src=50000,dst=4791)"
    dump = "\n".join([
        f"in_port(t0r0p{src.tor_port}),eth_type(0x0800),{tuple_}, packets:9, bytes:81000, "
        f"used:2.000s, actions:t0r0p{port[('t0r0', 's0')]}",
        f"in_port(t0r0p{src.tor_port}),eth_type(0x0800),{tuple_}, packets:90, bytes:810000, "
        f"used:0.010s, actions:t0r0p{port[('t0r0', 's1')]}",
        f"in_port(s1p{port[('s1', 't0r0')]}),eth_type(0x0800),ipv4(dst={dst.ip}/255.255.255.0,"
        f"frag=no), packets:90, bytes:810000, used:0.011s, actions:s1p{port[('s1', 't1r0')]}",
        f"in_port(t1r0p{port[('t1r0', 's1')]}),eth_type(0x0800),ipv4(dst={dst.ip},frag=no), "
        f"packets:90, bytes:810000, used:0.012s, actions:t1r0p{dst.tor_port}",
        f"in_port(t1r0p{port[('t1r0', 's0')]}),eth_type(0x0800),ipv4(dst={dst.ip},frag=no), "
        f"packets:0, bytes:0, used:never, actions:t1r0p{dst.tor_port}"])
    book = read_book(monkeypatch, recorded, topology, intfs, dump)
    (flow,) = book.flows
    assert flow.complete and flow.nodes == ["h1", "t0r0", "s1", "t1r0", "h5"], flow
    assert (flow.src_ip, flow.dst_ip, flow.src_port, flow.packets) == (src.ip, dst.ip, 50000, 90)


def read_book(monkeypatch, recorded, topology, intfs, dump):
    """A PathBook that read ``dump`` as its one shard's datapath flows."""
    monkeypatch.setattr(recorded, "unixctl", lambda *args, **kwargs: dump)
    book = recorded.PathBook(topology, intfs, ["shard0.ctl"])
    book.read(1)
    return book
