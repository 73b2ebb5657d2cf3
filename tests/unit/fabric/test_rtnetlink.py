"""The struct decoder of rtnetlink dumps (fabric.measure.rtnetlink), on the real kernel where
no root is needed (the root namespace's links) and on messages laid out as linux/rtnetlink.h."""

from __future__ import annotations

import socket
import struct

import pytest

from fabric.measure import rtnetlink as rt


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes as the kernel does."""
    raw = rt.RTATTR.pack(rt.RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def qdisc_message(index: int, parent: int, kind: str, sent: int, packets: int, drops: int,
                  backlog: int, qlen: int) -> bytes:
    """An RTM_NEWQDISC payload (tcmsg + TCA_KIND + nested TCA_STATS2)."""
    stats = (attr(rt.TCA_STATS_BASIC, rt.STATS_BASIC.pack(sent, packets) + b"\0" * 4)
             + attr(2, b"\0" * 8)  # TCA_STATS_RATE_EST: skipped
             + attr(rt.TCA_STATS_QUEUE, rt.STATS_QUEUE.pack(qlen, backlog, drops, 0, 7)))
    return (rt.TCMSG.pack(0, index, 0x10000, parent, 1) + attr(rt.TCA_KIND, kind.encode() + b"\0")
            + attr(2, b"\0" * 5)  # TCA_OPTIONS with odd length: alignment must hold
            + attr(rt.TCA_STATS2 | 0x8000, stats))  # NLA_F_NESTED set, as the kernel sends


def dump_answer(seq: int, payloads: list[bytes], msg_type: int = rt.RTM_NEWQDISC) -> bytes:
    """The payloads as one recv buffer of netlink messages answering ``seq``, then DONE."""
    out = b""
    for payload in payloads + [b"\0" * 4]:
        kind = msg_type if len(payload) > 4 else rt.NLMSG_DONE
        raw = rt.NLMSGHDR.pack(rt.NLMSGHDR.size + len(payload), kind, 2, seq, 0) + payload
        out += raw + b"\0" * (-len(raw) % 4)
    return out


def test_root_qdiscs_of_a_kind_with_their_counters():
    big = 5 * 2**32 + 17  # bytes are 64-bit
    data = dump_answer(7, [qdisc_message(3, rt.TC_H_ROOT, "htb", big, 9, 4, 18000, 2),
                           qdisc_message(3, 0x10001, "htb", 1, 1, 1, 1, 1),   # a child
                           qdisc_message(5, rt.TC_H_ROOT, "noqueue", 1, 1, 1, 1, 1),
                           qdisc_message(6, rt.TC_H_ROOT, "htb", 0, 0, 0, 0, 0)])
    found: dict = {}
    assert rt.root_qdisc_counters(data, 7, b"htb\0", found) is True  # the dump is done
    assert found == {3: (big, 9, 4, 18000, 2), 6: (0, 0, 0, 0, 0)}
    found = {}
    assert rt.root_qdisc_counters(data, 7, b"noqueue\0", found)
    assert found == {5: (1, 1, 1, 1, 1)}
    found = {}  # answers to another request are not this dump's
    assert rt.root_qdisc_counters(data, 8, b"htb\0", found) is False and found == {}


def test_a_root_qdisc_without_queue_statistics_is_an_error():
    stats = attr(rt.TCA_STATS_BASIC, rt.STATS_BASIC.pack(1, 1) + b"\0" * 4)
    payload = (rt.TCMSG.pack(0, 4, 0x10000, rt.TC_H_ROOT, 1)
               + attr(rt.TCA_KIND, b"htb\0") + attr(rt.TCA_STATS2, stats))
    with pytest.raises(rt.NetlinkError, match="ifindex 4 has no basic or queue statistics"):
        rt.root_qdisc_counters(dump_answer(3, [payload]), 3, b"htb\0", {})


def test_attributes_stop_at_a_truncated_one():
    data = attr(1, b"abcd") + struct.pack("=HH", 2, 9)  # length below the header: malformed
    assert {k: bytes(v) for k, v in rt.attributes(data, 0, len(data)).items()} == {1: b"abcd"}


def test_link_names_from_the_kernel():
    sock = rt.Socket()
    try:
        names = sock.link_names()
    finally:
        sock.close()
    assert names == {index: name for index, name in socket.if_nameindex()}
