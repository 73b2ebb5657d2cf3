"""pollgate.so (fabric/net/pollgate.c), preloaded into a child Python as into ovs-vswitchd:
which receive calls it answers without the kernel, and which it must leave alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fabric.net.shards import POLLGATE

CHILD = textwrap.dedent("""
    import ctypes, errno, json, os, select, socket, sys, threading

    libc = ctypes.CDLL(None, use_errno=True)
    gate = ctypes.CDLL(sys.argv[1])  # the preloaded copy: same path, same instance
    answered = ctypes.c_uint64.in_dll(gate, "pollgate_answered")

    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                    ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                    ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

    buf = ctypes.create_string_buffer(2048)
    vec = iovec(ctypes.cast(buf, ctypes.c_void_p), 2048)

    def recvmmsg(fd):
        msg = mmsghdr()
        msg.hdr.iov = ctypes.pointer(vec)
        msg.hdr.iovlen = 1
        n = libc.recvmmsg(fd, ctypes.byref(msg), 1, 0, None)
        return n if n >= 0 else -ctypes.get_errno()

    def poll(fd, events=select.POLLIN):
        p = select.poll()
        p.register(fd, events)
        return bool(p.poll(0))

    out = {}
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    out["before_any_poll"] = [recvmmsg(a.fileno()), answered.value]
    out["idle_poll"] = poll(a.fileno())
    out["after_idle_poll"] = [recvmmsg(a.fileno()), answered.value]
    b.send(b"x")
    out["data_since_poll"] = [recvmmsg(a.fileno()), answered.value]
    out["next_poll"] = poll(a.fileno())
    out["after_ready_poll"] = [recvmmsg(a.fileno()), answered.value]

    # Another thread never polled: its calls go to the kernel whatever this one saw.
    poll(a.fileno())
    b.send(b"y")
    seen = []
    t = threading.Thread(target=lambda: seen.append(recvmmsg(a.fileno())))
    t.start(); t.join()
    out["other_thread"] = [seen[0], answered.value]

    # POLLOUT only: not asked about input, never answered.
    poll(a.fileno(), select.POLLOUT)
    b.send(b"z")
    out["pollout_only"] = [recvmmsg(a.fileno()), answered.value]

    # close() forgets: a new socket on the same descriptor number goes to the kernel.
    poll(a.fileno())
    number = a.fileno()
    a.close()
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    if c.fileno() != number:
        os.dup2(c.fileno(), number)  # dup2 forgets too
    d.send(b"w")
    out["reused_number"] = [recvmmsg(number), answered.value]

    # accept/accept4 on an idle listener; a connection after the next poll is accepted.
    path = sys.argv[2]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path); server.listen(4); server.setblocking(False)
    poll(server.fileno())
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    try:
        server.accept()  # accept4 in CPython
        out["accept_idle"] = ["accepted", answered.value]
    except BlockingIOError:
        out["accept_idle"] = ["EAGAIN", answered.value]
    poll(server.fileno())
    conn, _ = server.accept()
    out["accept_ready"] = ["accepted", answered.value]
    print(json.dumps(out))
""")


def _run_child(tmp_path) -> dict:
    assert POLLGATE.exists(), f"{POLLGATE} missing: run 'make setup'"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "LD_PRELOAD": str(POLLGATE)}
    done = subprocess.run([sys.executable, str(script), str(POLLGATE), str(tmp_path / "l.sock")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_pollgate_answers_only_what_the_threads_last_poll_found_idle(tmp_path):
    out = _run_child(tmp_path)
    eagain = -11
    assert out["before_any_poll"] == [eagain, 0]        # no poll yet: the kernel said EAGAIN
    assert out["idle_poll"] is False
    assert out["after_idle_poll"] == [eagain, 1]        # answered here
    assert out["data_since_poll"] == [eagain, 2]        # a frame since that poll waits a turn
    assert out["next_poll"] is True                     # ... and the next poll returns at once
    assert out["after_ready_poll"] == [1, 2]            # then the kernel hands it over
    assert out["other_thread"] == [1, 2]                # another thread's call is not answered
    assert out["pollout_only"] == [1, 2]                # not polled for input: not answered
    assert out["reused_number"] == [1, 2]               # close/dup2 forgot the descriptor
    assert out["accept_idle"] == ["EAGAIN", 3]          # an idle listener: answered
    assert out["accept_ready"] == ["accepted", 3]


def test_the_shards_preload_pollgate_after_the_allocator_unless_told_not_to(tmp_path):
    from fabric.net.shards import TCMALLOC, Shard

    shard = Shard(0, "ns", tmp_path)
    assert shard.preload()[-1] == str(POLLGATE)
    if os.path.exists(TCMALLOC):
        assert shard.preload() == [TCMALLOC, str(POLLGATE)]
    assert str(POLLGATE) not in Shard(0, "ns", tmp_path, "glibc", pollgate=False).preload()


TURNS_CHILD = textwrap.dedent("""
    import select, socket, sys, threading, time
    a, b = socket.socketpair()
    many = select.poll()
    many.register(a.fileno(), select.POLLIN); many.register(b.fileno(), select.POLLIN)
    mode = sys.argv[1]
    if mode == "turns":
        for _ in range(6):       # six turns of about 3 ms between seven polls of two fds
            many.poll(0)
            time.sleep(0.003)
        many.poll(0)
    elif mode == "sleep":
        many.poll(0)
        time.sleep(0.003)        # a 3-ms turn, then nothing ready: 200 ms asleep in poll ...
        many.poll(200)
        time.sleep(0.003)        # ... which is not a turn; the next one is 3 ms again
        many.poll(0)
    elif mode == "fewer":
        c, d = socket.socketpair()
        many.register(c.fileno(), select.POLLIN)
        many.poll(0)
        time.sleep(0.003)
        many.poll(0)             # one turn polling three descriptors, then c closes:
        many.unregister(c.fileno()); c.close()
        for _ in range(3):       # still the main loop, with two
            time.sleep(0.003)
            many.poll(0)
    elif mode == "held":         # the harness holds the count around turns 3 and 4
        import os
        sys.path.insert(0, sys.argv[2])
        from fabric.measure.turns import held
        hold = held([os.environ["POLLGATE_STATS"]])
        many.poll(0); time.sleep(0.003)
        many.poll(0); hold.__enter__(); time.sleep(0.003)
        many.poll(0); time.sleep(0.003)
        many.poll(0); hold.__exit__(None, None, None); time.sleep(0.003)
        many.poll(0); time.sleep(0.003)
        many.poll(0)
    elif mode == "long":
        for pause in [0.001] * 10 + [0.03]:  # ten 1-ms turns and one of 30 ms
            many.poll(0)
            time.sleep(pause)
        many.poll(0)
    elif mode == "paced":
        start = time.monotonic()
        for _ in range(11):      # eleven polls at once: ten turns of at least the pace
            many.poll(0)
        print(time.monotonic() - start)
    def few():                   # a thread polling fewer descriptors: not the main loop
        one = select.poll()
        one.register(a.fileno(), select.POLLIN)
        start = time.monotonic()
        for _ in range(4):
            one.poll(0)
            time.sleep(0.001)
        print(time.monotonic() - start)
    t = threading.Thread(target=few); t.start(); t.join()
""")


def run_turns_child(tmp_path, mode, pace_us=None):
    """Run TURNS_CHILD in ``mode`` with pollgate preloaded; its stats and printed lines."""
    from fabric.measure.turns import read_turns

    stats = tmp_path / f"turns-{mode}.bin"
    script = tmp_path / "turns.py"
    script.write_text(TURNS_CHILD)
    env = {**os.environ, "LD_PRELOAD": str(POLLGATE), "POLLGATE_STATS": str(stats)}
    if pace_us:
        env["POLLGATE_MIN_TURN_US"] = str(pace_us)
    root = str(Path(__file__).resolve().parents[3])
    done = subprocess.run([sys.executable, str(script), mode, root], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return read_turns(stats), [float(line) for line in done.stdout.split()]


def counted_between(turns, low_us, high_us):
    """Turns counted in buckets that lie within [low_us, high_us)."""
    from fabric.measure.turns import bucket_upper_us

    return sum(count for bucket, count in enumerate(turns.count)
               if bucket and bucket_upper_us(bucket - 1) >= low_us
               and bucket_upper_us(bucket) <= high_us)


def test_pollgate_times_the_turns_of_the_thread_polling_the_most_descriptors(tmp_path):
    from fabric.measure.turns import read_turns

    turns, _ = run_turns_child(tmp_path, "turns")
    assert turns is not None and turns.turns == 6
    # Turns of >= 3 ms (a slow machine may stretch them); the other thread's 1-ms turns
    # are not counted.
    assert counted_between(turns, 2800, 12000) == 6, turns.count
    assert 0.017 <= turns.busy_ns / 1e9 < 0.2
    assert 3000 <= turns.quantile_us(0.5) < 12000
    assert turns.paced_ns == 0 and turns.min_turn_us == 0
    assert read_turns(tmp_path / "absent.bin") is None


def test_the_timed_thread_stays_timed_when_it_polls_fewer_descriptors_for_a_while(tmp_path):
    turns, _ = run_turns_child(tmp_path, "fewer")
    assert turns.turns == 4 and counted_between(turns, 2800, 12000) == 4, turns.count


def test_turns_begun_while_the_harness_holds_the_count_are_not_counted(tmp_path):
    turns, _ = run_turns_child(tmp_path, "held")
    # Five 3-ms turns: the two that began while held are counted apart, not timed.
    assert (turns.turns, turns.held_turns) == (3, 2)
    assert counted_between(turns, 2800, 12000) == 3, turns.count


def test_a_turn_ends_when_the_loop_finds_nothing_and_sleeps(tmp_path):
    turns, _ = run_turns_child(tmp_path, "sleep")
    # Two 3-ms turns; the 200 ms asleep in poll() are not in either.
    assert turns.turns == 2 and counted_between(turns, 2800, 12000) == 2, turns.count
    assert turns.busy_ns / 1e9 < 0.05


def test_turn_time_quantiles_weigh_each_turn_by_how_long_it_lasted(tmp_path):
    turns, _ = run_turns_child(tmp_path, "long")
    assert turns.turns == 11
    assert turns.quantile_us(0.5) < 4000            # most turns are short ...
    assert turns.time_quantile_us(0.5) >= 30000     # ... most of the time is in the long one


def test_pacing_holds_the_main_loop_to_its_minimum_turn_and_no_other_thread(tmp_path):
    turns, (paced_s, other_s) = run_turns_child(tmp_path, "paced", pace_us=5000)
    assert turns.min_turn_us == 5000 and turns.turns == 10
    assert paced_s >= 0.05 and counted_between(turns, 4600, 20000) == 10, turns.count
    assert turns.paced_ns / 1e9 >= 0.04
    assert other_s < 0.02                            # the other thread's polls: not paced
    unpaced, (fast_s, _) = run_turns_child(tmp_path, "paced")
    assert fast_s < 0.02 and unpaced.paced_ns == 0


def test_turn_buckets_hold_what_they_say():
    from fabric.measure.turns import bucket_of, bucket_upper_us

    for us in list(range(0, 100)) + [127, 128, 1000, 1023, 1024, 4095, 4096, 123456, 10**7]:
        bucket = bucket_of(us)
        low = bucket_upper_us(bucket - 1) if bucket else 0.0
        assert low <= us < bucket_upper_us(bucket), (us, bucket)
        assert bucket_upper_us(bucket) <= max(us * 1.125, us + 1), us  # within 1/8 above


EPOLL_CHILD = textwrap.dedent("""
    import ctypes, json, os, select, socket, sys

    gate = ctypes.CDLL(sys.argv[1])
    calls = ctypes.c_uint64.in_dll(gate, "pollgate_epoll_calls")
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(20)]
    p = select.poll()
    for a, _ in pairs:
        p.register(a.fileno(), select.POLLIN)
    names = {a.fileno(): i for i, (a, _) in enumerate(pairs)}

    def ready(timeout=0):
        return sorted([names[fd], ev] for fd, ev in p.poll(timeout))

    out = {"idle": ready()}
    for i in (2, 7, 19):
        pairs[i][1].send(b"x")
    out["three"] = ready()
    out["level"] = ready()                        # still readable: reported again
    for i in (2, 7):
        pairs[i][0].recv(16)
    out["one_left"] = ready()
    p.modify(pairs[3][0].fileno(), select.POLLOUT)
    out["pollout"] = ready()                      # writable, asked for output now
    p.modify(pairs[3][0].fileno(), select.POLLIN)
    p.unregister(pairs[19][0].fileno())
    out["unregistered"] = ready()
    pairs[5][1].close()
    out["hangup"] = ready()                       # the peer went: POLLIN | POLLHUP
    p.unregister(pairs[5][0].fileno())
    number = pairs[6][0].fileno()
    pairs[6][0].close()                           # its number, reused by a new socket
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if d.fileno() == number:
        c, d = d, c
    if c.fileno() != number:
        os.dup2(c.fileno(), number)
    d.send(b"y")
    out["reused"] = ready()
    out["epoll_calls"] = calls.value
    print(json.dumps(out))
""")


@pytest.mark.parametrize("epoll", ["1", "0"])
def test_poll_over_many_descriptors_answers_as_poll_does(tmp_path, epoll):
    # Twenty descriptors: pollgate answers from its epoll set (POLLGATE_EPOLL=1) what the
    # kernel's poll() answers (POLLGATE_EPOLL=0), level-triggered, as the array changes.
    script = tmp_path / "epoll_child.py"
    script.write_text(EPOLL_CHILD)
    env = {**os.environ, "LD_PRELOAD": str(POLLGATE), "POLLGATE_EPOLL": epoll}
    done = subprocess.run([sys.executable, str(script), str(POLLGATE)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    pollin, pollout, pollhup = 1, 4, 16
    assert out["idle"] == []
    assert out["three"] == out["level"] == [[2, pollin], [7, pollin], [19, pollin]]
    assert out["one_left"] == [[19, pollin]]
    assert out["pollout"] == [[3, pollout], [19, pollin]]
    assert out["unregistered"] == []
    assert out["hangup"] == [[5, pollin | pollhup]]
    assert out["reused"] == [[6, pollin]]
    assert (out["epoll_calls"] > 0) == (epoll == "1")
