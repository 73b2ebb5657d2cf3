"""Pause gates: how a PFC pause stops one egress queue without dropping what it holds.

Under ``flow_control = "pfc"`` every egress is htb (the link rate) -> tbf (the
gate, handle 10:) -> bfifo (the buffer, tbf's own inner queue). Open, the gate's
rate is `OPEN_FACTOR` times the link's and its bucket two frames, so the htb class
alone shapes the link. Paused, its rate is `PAUSED_BPS` with a one-frame bucket:
it can let out at most the one frame its refilled bucket holds (the "one frame
each" of the PFC headroom), then nothing for minutes.

Why not the htb class itself (set to a trickle): htb charges a frame sent at the
trickle rate as a debt of (frame / trickle) of time, up to 60 s, kept when the
rate is restored, so one frame let out during a pause would stall the link for
seconds after it. tbf never goes into debt and a change refills its bucket.

A change does not restart the qdisc's dequeue; a resumed gate whose feeders are
all paused would keep its frames until its watchdog (minutes). So resuming also
enqueues one `kick` frame (a MAC-control frame, ethertype 0x8808, addressed to
the PFC multicast address): the enqueue runs the queue; the frame reaches the
next switch or host and is dropped there (no OpenFlow rule matches it; a host's
kernel has no handler for it).

The changes go over rtnetlink (one socket per namespace, no fork): Linux uapi
``tc_tbf_qopt`` / ``tc_ratespec`` (linux/pkt_sched.h).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from fabric.measure import rtnetlink
from fabric.net.netns import in_netns

GATE_HANDLE = 0x00100000      # 10: (tc handles are hex)
GATE_PARENT = 0x00010001      # the htb class 1:1
#: Open gate rate, in multiples of the link's: never the bottleneck.
OPEN_FACTOR = 4
#: Paused gate rate (bytes/s): a one-frame bucket refills in minutes.
PAUSED_BPS = 125
RTM_NEWQDISC = 36
NLM_F_ACK = 0x4
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64, TCA_TBF_BURST = 1, 4, 6
TC_LINKLAYER_ETHERNET = 1
RATESPEC = struct.Struct("=BBHhHI")   # cell_log, linklayer, overhead, cell_align, mpu, rate
ETH_P_MAC_CONTROL = 0x8808
PFC_DESTINATION = bytes.fromhex("0180c2000001")
PFC_OPCODE = 0x0101


def tbf_line(intf: str, mbps: float, frame: int, limit: int) -> str:
    """The tc batch line creating an open gate (whose inner bfifo holds ``limit`` bytes)."""
    kbit = max(1, round(mbps * 1000 * OPEN_FACTOR))
    return (f"qdisc replace dev {intf} parent 1:1 handle 10: tbf rate {kbit}kbit "
            f"burst {2 * frame}b limit {limit}")


def tbf_options(rate_bps: int, burst: int, limit: int) -> bytes:
    """TCA_OPTIONS of a tbf change: rate (bytes/s), bucket (bytes), inner bfifo limit."""
    rate32 = min(rate_bps, 0xFFFFFFFF)
    qopt = (RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, 0, 0, rate32)
            + RATESPEC.pack(0, 0, 0, 0, 0, 0) + struct.pack("=III", limit, 0, 0))
    body = rtnetlink.attribute(TCA_TBF_PARMS, qopt) + rtnetlink.attribute(
        TCA_TBF_BURST, struct.pack("=I", burst))
    if rate_bps > 0xFFFFFFFF:
        body += rtnetlink.attribute(TCA_TBF_RATE64, struct.pack("=Q", rate_bps))
    return body


def kick_frame(source_mac: bytes) -> bytes:
    """A 60-byte PFC frame with every class's pause time zero (a resume, as PFC has it)."""
    frame = PFC_DESTINATION + source_mac + struct.pack("!HHH", ETH_P_MAC_CONTROL, PFC_OPCODE, 0)
    return frame + bytes(60 - len(frame))


@dataclass(frozen=True)
class Gate:
    """The pause gate of one egress queue (the sending end of one link direction)."""

    intf: str
    netns: str | None
    mbps: float
    frame: int
    limit: int


class GateControl:
    """Pauses and resumes gates; one netlink socket and one packet socket per interface
    namespace, opened on first use (a socket stays in the namespace it was made in)."""

    def __init__(self) -> None:
        self._netlink: dict[str | None, rtnetlink.Socket] = {}
        self._index: dict[tuple[str | None, str], int] = {}
        self._packet: dict[tuple[str | None, str], tuple[socket.socket, bytes]] = {}

    def close(self) -> None:
        """Close every socket."""
        for sock in self._netlink.values():
            sock.close()
        for sock, _ in self._packet.values():
            sock.close()
        self._netlink.clear()
        self._packet.clear()

    def _socket(self, netns: str | None) -> rtnetlink.Socket:
        if netns not in self._netlink:
            with in_netns(netns):
                self._netlink[netns] = rtnetlink.Socket()
            for index, name in self._netlink[netns].link_names().items():
                self._index[(netns, name)] = index
        return self._netlink[netns]

    def pause(self, gate: Gate) -> None:
        """Close the gate: at most the one frame in its refilled bucket leaves after this."""
        self._change(gate, PAUSED_BPS, gate.frame)

    def resume(self, gate: Gate, backlog: int | None = None) -> None:
        """Open the gate and restart its queue (the kick, when it has room for it)."""
        self._change(gate, round(gate.mbps * 1e6 / 8 * OPEN_FACTOR), 2 * gate.frame)
        if backlog is None or backlog + 64 <= gate.limit:
            self.kick(gate)

    def _change(self, gate: Gate, rate_bps: int, burst: int) -> None:
        sock = self._socket(gate.netns)
        index = self._index[(gate.netns, gate.intf)]
        tcmsg = rtnetlink.TCMSG.pack(0, index, GATE_HANDLE, GATE_PARENT, 0)
        body = (tcmsg + rtnetlink.attribute(TCA_KIND, b"tbf\0")
                + rtnetlink.attribute(TCA_OPTIONS, tbf_options(rate_bps, burst, gate.limit)))
        sock.request(RTM_NEWQDISC, body, NLM_F_ACK)

    def kick(self, gate: Gate) -> None:
        """Enqueue one kick frame on the gate's interface."""
        key = (gate.netns, gate.intf)
        if key not in self._packet:
            with in_netns(gate.netns):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                sock.bind((gate.intf, 0))
            self._packet[key] = (sock, kick_frame(_mac(sock)))
        sock, frame = self._packet[key]
        try:
            sock.send(frame)
        except OSError:  # a full queue runs anyway; the kick is only for an idle one
            pass


def _mac(sock: socket.socket) -> bytes:
    """The hardware address of the interface a packet socket is bound to."""
    address = sock.getsockname()
    return bytes(address[4][:6]) if len(address) > 4 and address[4] else bytes(6)
