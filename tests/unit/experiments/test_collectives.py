"""Collective schedules (ring AllReduce, All2All with/without PXN, pipeline) and placement."""

import copy
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.workload import collectives as col
from experiments.workload.placement import place, pods_of
from topologies import load

RANKS = ["h1", "h2", "h3", "h4"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 8), rails=st.integers(1, 4), unit=st.integers(1, 50))
def test_allreduce_bytes_per_rank_match_ring_definition(n, rails, unit):
    ranks = [f"h{i + 1}" for i in range(n)]
    size = n * rails * unit
    schedule = col.ring_allreduce(ranks, size, rails)
    assert len(schedule.steps) == 2 * (n - 1)
    for rank in ranks:
        assert schedule.bytes_sent(rank) == 2 * (n - 1) * size // n
    for step in schedule.steps:
        assert Counter(t.src for t in step) == {r: rails for r in ranks}
        assert {t.size for t in step} == {size // (n * rails)}
        assert not any(t.crosses_rails for t in step)
        for t in step:  # ring successor, on its own rail
            assert t.dst == ranks[(ranks.index(t.src) + 1) % n]


# -- the schedules run on integer buffers ------------------------------------------------
# A Transfer names NICs, a size, a step and dependencies, but no chunk or byte offset. The
# simulations below derive what each transfer carries from that: a ring transfer with a
# dependency forwards the chunk its dependency delivered to its source NIC; one without
# (step 0) sends its rank's own chunk (rank i: chunk i of the rail's share). All2All pieces
# fill, in schedule order, the part of the sender's block for the destination that belongs
# to the destination's rail. Each transfer's size must equal the bytes it is found to carry.


def ring_chunks(size, rails, n):
    """Byte range of (rail, chunk) in a rank's S-byte buffer: rail shares, each cut in n."""
    bounds, start = {}, 0
    for rail, share in enumerate(col.split(size, rails)):
        for chunk, length in enumerate(col.split(share, n)):
            bounds[rail, chunk] = slice(start, start + length)
            start += length
    assert start == size
    return bounds


def start_buffers(ranks, size, seed=0):
    """A distinct random vector of positive integers per rank (a partial sum is never the total)."""
    rng = np.random.default_rng(seed)
    return {rank: rng.integers(1, 1000, size) for rank in ranks}


def run_ring(schedule, buffers, reduce_steps):
    """Apply the schedule step by step: reduce-scatter steps add, the others copy."""
    ranks, n = list(schedule.ranks), len(schedule.ranks)
    bounds = ring_chunks(schedule.size, schedule.rails, n)
    by_id = {t.id: t for t in schedule.transfers()}
    carried = {}  # transfer id -> (rail, chunk)
    for k, step in enumerate(schedule.steps):
        moves = []
        for t in step:
            if t.depends_on:
                (dep,) = t.depends_on
                assert (by_id[dep].dst, by_id[dep].dst_rail) == (t.src, t.src_rail), t.id
                rail, chunk = carried[dep]
            else:
                rail, chunk = t.src_rail, ranks.index(t.src)
            assert t.src_rail == t.dst_rail == rail, f"{t.id}: leaves rail {rail}"
            piece = bounds[rail, chunk]
            assert t.size == piece.stop - piece.start, f"{t.id}: chunk {chunk} has other size"
            data = buffers[t.src][piece].copy()
            assert (data >= 0).all(), f"{t.id}: sends chunk {chunk} it does not hold"
            carried[t.id] = (rail, chunk)
            moves.append((t.dst, piece, data))
        for dst, piece, data in moves:  # a step's transfers run at the same time
            if k in reduce_steps:
                buffers[dst][piece] += data
            else:
                buffers[dst][piece] = data
    return buffers


sizes = st.tuples(st.integers(2, 6), st.integers(1, 3), st.integers(0, 40)).map(
    lambda t: (t[0], t[1], t[0] * t[1] + t[2]))  # ranks, rails, size (uneven splits too)


@settings(max_examples=80, deadline=None)
@given(sizes)
def test_allreduce_leaves_every_rank_with_the_elementwise_sum(case):
    n, rails, size = case
    ranks = [f"h{i + 1}" for i in range(n)]
    start = start_buffers(ranks, size)
    total = sum(start.values())
    schedule = col.ring_allreduce(ranks, size, rails)
    end = run_ring(schedule, copy.deepcopy(start), reduce_steps=range(n - 1))
    for rank in ranks:
        assert (end[rank] == total).all(), rank


@settings(max_examples=80, deadline=None)
@given(sizes)
def test_reduce_scatter_leaves_each_chunk_summed_on_exactly_one_rank(case):
    n, rails, size = case
    ranks = [f"h{i + 1}" for i in range(n)]
    start = start_buffers(ranks, size)
    total = sum(start.values())
    end = run_ring(col.ring_reduce_scatter(ranks, size, rails), copy.deepcopy(start),
                   reduce_steps=range(n - 1))
    summed = {(rank, rail, chunk) for rank in ranks
              for (rail, chunk), piece in ring_chunks(size, rails, n).items()
              if (end[rank][piece] == total[piece]).all()}
    # every chunk of every rail summed on exactly one rank, and every rank owns one per rail
    assert Counter((rail, chunk) for _, rail, chunk in summed) == {
        (rail, chunk): 1 for rail in range(rails) for chunk in range(n)}
    assert Counter((rank, rail) for rank, rail, _ in summed) == {
        (rank, rail): 1 for rank in ranks for rail in range(rails)}


@settings(max_examples=80, deadline=None)
@given(sizes)
def test_all_gather_leaves_every_rank_with_every_ranks_chunk(case):
    n, rails, size = case
    ranks = [f"h{i + 1}" for i in range(n)]
    own = start_buffers(ranks, size)
    bounds = ring_chunks(size, rails, n)
    gathered = np.full(size, -1)
    buffers = {}
    for i, rank in enumerate(ranks):
        buffers[rank] = np.full(size, -1)  # -1: not held yet
        for rail in range(rails):
            piece = bounds[rail, i]
            buffers[rank][piece] = gathered[piece] = own[rank][piece]
    end = run_ring(col.ring_all_gather(ranks, size, rails), buffers, reduce_steps=())
    for rank in ranks:
        assert (end[rank] == gathered).all(), rank


def block(size, n, b):
    """Byte range of the block for rank index ``b`` in an All2All send buffer."""
    shares = col.split(size, n)
    return slice(sum(shares[:b]), sum(shares[:b + 1]))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 5), rails=st.integers(1, 4), size=st.integers(1, 400),
       pxn=st.booleans())
def test_all2all_leaves_every_rank_with_its_block_of_every_rank(n, rails, size, pxn):
    ranks = [f"h{i + 1}" for i in range(n)]
    send = start_buffers(ranks, size)
    received = {dst: {src: np.full(block(size, n, b).stop - block(size, n, b).start, -1)
                      for src in ranks} for b, dst in enumerate(ranks)}
    filled = Counter()  # (src, dst, dst rail) -> bytes of that rail's part received
    for t in col.all2all(ranks, size, rails, pxn=pxn).transfers():
        assert t.src != t.dst
        b = ranks.index(t.dst)
        mine = block(size, n, b)
        parts = col.split(mine.stop - mine.start, rails)  # the part for each of b's rails
        begin = sum(parts[:t.dst_rail]) + filled[t.src, t.dst, t.dst_rail]
        assert filled[t.src, t.dst, t.dst_rail] + t.size <= parts[t.dst_rail], t.id
        received[t.dst][t.src][begin:begin + t.size] = \
            send[t.src][mine.start + begin: mine.start + begin + t.size]
        filled[t.src, t.dst, t.dst_rail] += t.size
    for b, dst in enumerate(ranks):
        received[dst][dst] = send[dst][block(size, n, b)]  # its own block never leaves
        for src in ranks:
            assert (received[dst][src] == send[src][block(size, n, b)]).all(), (src, dst)


def test_ring_dependencies_wait_for_the_previous_receive():
    schedule = col.ring_allreduce(RANKS, 800, rails=2)
    by_id = {t.id: t for t in schedule.transfers()}
    assert len(by_id) == sum(len(s) for s in schedule.steps)  # ids are unique
    assert all(t.depends_on == () for t in schedule.steps[0])
    for step in schedule.steps[1:]:
        for t in step:
            (dep,) = t.depends_on
            before = by_id[dep]
            assert (before.dst, before.dst_rail) == (t.src, t.src_rail)
            assert before.step == t.step - 1
            assert before.src == RANKS[(RANKS.index(t.src) - 1) % 4]


def test_uneven_sizes_are_split_without_losing_bytes():
    assert col.split(1003, 3) == [335, 334, 334]
    schedule = col.ring_reduce_scatter(RANKS, 1003, rails=3)
    assert len(schedule.steps) == 3
    # every chunk of every rail crosses n-1 ring links exactly once each
    assert sum(t.size for t in schedule.transfers()) == 3 * 1003
    per_rail = Counter()
    for t in schedule.transfers():
        per_rail[t.src_rail] += t.size
    assert per_rail == {0: 3 * 335, 1: 3 * 334, 2: 3 * 334}


def test_allgather_forwards_what_it_received():
    schedule = col.ring_all_gather(RANKS, 400, rails=1)
    assert len(schedule.steps) == 3 and schedule.kind == col.ALLGATHER
    assert schedule.bytes_sent("h1") == 300


@pytest.mark.parametrize("pxn", [True, False])
def test_all2all_bytes_per_rank(pxn):
    rails, n = 4, 4
    size = n * rails * rails * 10
    schedule = col.all2all(RANKS, size, rails, pxn=pxn)
    assert len(schedule.steps) == 1
    for rank in RANKS:
        assert schedule.bytes_sent(rank) == (n - 1) * size // n
        received = sum(t.size for t in schedule.transfers() if t.dst == rank)
        assert received == (n - 1) * size // n
    assert not any(t.src == t.dst for t in schedule.transfers())
    # every destination NIC gets the same share from every remote server
    per_dst_nic = Counter((t.src, t.dst, t.dst_rail) for t in schedule.transfers())
    assert len(per_dst_nic) == n * (n - 1) * rails


def test_pxn_never_crosses_rails_and_without_it_messages_do():
    pxn = col.all2all(RANKS, 6400, 4, pxn=True)
    assert not any(t.crosses_rails for t in pxn.transfers())
    plain = col.all2all(RANKS, 6400, 4, pxn=False)
    crossing = [t for t in plain.transfers() if t.crosses_rails]
    assert crossing and all(t.src_rail != t.dst_rail for t in crossing)
    assert len(crossing) == 4 * 3 * 4 * 3  # src ranks x peers x dst rails x other src rails
    assert len(list(pxn.transfers())) == 4 * 3 * 4


def test_pipeline_flows_stage_to_stage_with_dependencies():
    schedule = col.pipeline(["h1", "h2", "h3"], 1000, rails=2, microbatches=3)
    assert len(schedule.steps) == 3 + 3 - 2
    assert schedule.bytes_sent("h1") == 3000 and schedule.bytes_sent("h3") == 0
    by_id = {t.id: t for t in schedule.transfers()}
    for t in schedule.transfers():
        assert t.src_rail == t.dst_rail and t.size == 500
        if t.src == "h2":
            (dep,) = t.depends_on
            assert by_id[dep].dst == "h2" and by_id[dep].step == t.step - 1
        else:
            assert t.depends_on == ()


def test_busbw_factors_are_nccl_tests():
    assert col.busbw_factor(col.ALLREDUCE, 8) == pytest.approx(14 / 8)
    assert col.busbw_factor(col.ALL2ALL, 4) == pytest.approx(0.75)
    assert col.busbw_factor(col.ALLGATHER, 2) == pytest.approx(0.5)
    assert col.busbw_factor(col.SENDRECV, 5) == 1.0
    with pytest.raises(ValueError, match="collective.kind"):
        col.busbw_factor("broadcast", 4)


@pytest.mark.parametrize("call, field", [
    (lambda: col.ring_allreduce(RANKS, 0, 2), "collective.size"),
    (lambda: col.all2all(RANKS, -5, 2), "collective.size"),
    (lambda: col.ring_allreduce(["h1"], 100, 1), "collective.ranks"),
    (lambda: col.pipeline(["h1"], 100, 1), "collective.ranks"),
    (lambda: col.all2all(["h1", "h1"], 100, 1), "collective.ranks"),
    (lambda: col.ring_allreduce(RANKS, 100, 0), "collective.rails"),
    (lambda: col.ring_allreduce(RANKS, 7, 2), "collective.size"),
    (lambda: col.pipeline(RANKS, 100, 1, microbatches=0), "collective.microbatches"),
])
def test_validation_errors_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_combine_runs_disjoint_jobs_and_rejects_shared_servers():
    a = col.ring_allreduce(["h1", "h2"], 400, 2, job="a")
    b = col.all2all(["h3", "h4"], 400, 2, job="b")
    workload = col.combine([a, b])
    assert {t.job for t in workload.transfers()} == {"a", "b"}
    assert len({t.id for t in workload.transfers()}) == len(list(workload.transfers()))
    assert {t.job for t in workload.step(1)} == {"a"}
    with pytest.raises(ValueError, match="h2"):
        col.combine([a, col.all2all(["h2", "h3"], 400, 2, job="c")])
    with pytest.raises(ValueError, match="job name 'a'"):
        col.combine([a, col.all2all(["h5", "h6"], 400, 2, job="a")])


def test_nic_ips_follow_the_address_plan():
    ips = col.nic_ips(load("rail-2tier-small"))
    assert ips[("h1", 0)] == "10.0.0.1" and ips[("h6", 3)] == "10.3.1.2"


def test_packed_placement_fills_one_pod_when_it_fits():
    topology = load("rail-2tier-small")  # 2 pods x 4 servers
    assert place(topology, 3, "packed") == ["h1", "h2", "h3"]
    assert place(topology, 3, "packed", exclude={"h2", "h3"}) == ["h5", "h6", "h7"]
    assert place(topology, 6, "packed") == ["h1", "h2", "h3", "h4", "h5", "h6"]


def test_scattered_placement_is_seeded_and_spans_pods():
    topology = load("rail-3tier")  # 4 pods x 4 servers
    first = place(topology, 4, "scattered", seed=7)
    assert first == place(topology, 4, "scattered", seed=7)
    picks = {tuple(place(topology, 4, "scattered", seed=s)) for s in range(20)}
    assert len(picks) > 10
    assert max(len(pods_of(topology, p)) for p in picks) > 1
    assert "h1" not in place(topology, 15, "scattered", seed=1, exclude={"h1"})


@pytest.mark.parametrize("kwargs, field", [
    (dict(servers=9), "placement.servers"),
    (dict(servers=8, exclude={"h1"}), "placement.servers"),
    (dict(servers=0), "placement.servers"),
    (dict(servers=2, policy="random"), "placement.policy"),
    (dict(servers=2, exclude={"h99"}), "placement.exclude"),
])
def test_placement_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        place(load("rail-2tier-small"), **kwargs)
