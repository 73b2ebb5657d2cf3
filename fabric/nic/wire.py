"""RoCEv2-like wire format shared by the emulated NIC agents and the controller.

Every message is the payload of a UDP datagram to port 4791 (``ROCE_PORT``):
a 12-byte InfiniBand Base Transport Header (BTH), a body that depends on the
opcode, and a 4-byte ICRC, so ``scapy.contrib.roce`` and Wireshark decode it.

Opcodes: IB RC SEND_FIRST 0x00 / MIDDLE 0x01 / LAST 0x02 / ONLY 0x04 carry data;
ACKNOWLEDGE 0x11 carries an AETH (syndrome u8 + MSN u24; ACK syndromes
0x00..0x1f, NAK "PSN sequence error" 0x60 with the BTH PSN = expected PSN);
CNP 0x81 carries 16 reserved bytes with BECN set (as RoCEv2 and scapy's
``cnp()``); railcc's receivers set bit 0 of the first one when their NIC is
taking frames from several QPs (``Cnp.last_hop``, for PLB). An ACK's MSN carries
the one-way delay of the frame it acknowledges, in microseconds (Swift; 0: none). Private opcodes from the IB manufacturer range 0xC0..0xFF:
FLOW_REQUEST 0xC0 (src ip, dst ip, bytes u64, src udp port u16), RATE_GRANT
0xC1 (rate kbit/s u32), FLOW_DONE 0xC2 (src ip, dst ip, bytes u64); their BTH
DestQP is the flow's QP and their PSN a sequence number matching grant to
request. RATE_GRANTS 0xC3 carries several QPs' grants to one NIC (a
re-allocation touches many at once; one packet-out each cost the switch's
forwarding thread): BTH DestQP and PSN 0, then per grant QP u32, rate kbit/s
u32, sequence number u32, at most ``MAX_GRANTS`` of them.

Unlike IB (which carries it only in the first packet) every data packet holds
the railcc payload header: send timestamp ns u64, message id u64, message
length u32, offset of this packet's bytes in the message u32; then
``padding`` zero bytes standing for the message bytes. The ICRC is zero by
default (agents send through kernel UDP sockets and cannot know the IP ID the
kernel picks); ``icrc()`` computes the real one from the IP and UDP headers.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

#: The one declaration of every header railcc builds or parses (network order);
#: the controller (controllers/core) and the NIC (fabric/nic) import these.
#: Ethernet II: destination MAC, source MAC, EtherType.
ETH_HEADER = struct.Struct("!6s6sH")
#: IPv4 without options: version|IHL, TOS, total length, ID, flags|fragment,
#: TTL, protocol, header checksum, source, destination.
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
#: UDP: source port, destination port, length, checksum.
UDP_HEADER = struct.Struct("!HHHH")
#: InfiniBand BTH as words: opcode, SE|M|Pad|TVer, P_Key, FECN|BECN|resv6 +
#: DestQP (u24), AckReq|resv7 + PSN (u24).
BTH = struct.Struct("!BBHII")
#: railcc payload header of data packets: send ts ns, message id, length, offset.
DATA_HEADER = struct.Struct("!QQII")
#: BTH + data header in one struct, for the per-packet paths (fabric/nic/qp.py, core.py).
DATA_HEAD = struct.Struct(BTH.format + DATA_HEADER.format[1:])
BTH_U24 = 0xFFFFFF
BTH_BECN = 0x40000000  # in the DestQP word
BTH_ACKREQ = 0x80000000  # in the PSN word

ROCE_PORT = 4791
ETH_HEADER_LEN = ETH_HEADER.size
BTH_LEN = BTH.size
AETH_LEN = 4
ICRC_LEN = 4
CNP_PAD_LEN = 16
DATA_HEADER_LEN = DATA_HEADER.size
IPV4_HEADER_LEN = IPV4_HEADER.size
UDP_HEADER_LEN = UDP_HEADER.size
#: Bytes of an IPv4 data packet that are not message bytes (padding).
DATA_OVERHEAD = IPV4_HEADER_LEN + UDP_HEADER_LEN + BTH_LEN + DATA_HEADER_LEN + ICRC_LEN
DEFAULT_PKEY = 0xFFFF
PSN_MOD = 1 << 24
SYNDROME_ACK = 0x1F  # ACK, credit count "invalid" (no end-to-end credits)
SYNDROME_NAK_PSN = 0x60  # NAK, PSN sequence error
SOURCE_PORT_MIN = 49152
#: The virtual fabric manager: NICs address in-band control (FLOW_REQUEST,
#: FLOW_DONE) to this IP and MAC; ToRs punt it to the controller, which
#: answers (RATE_GRANT, CNP) with packet-outs sent from this address.
MANAGER_IP = "10.255.255.254"
MANAGER_MAC = "02:ff:ff:ff:ff:fe"

_REQUEST = struct.Struct("!4s4sQH")
_GRANT = struct.Struct("!I")
_DONE = struct.Struct("!4s4sQ")
_GRANTS_ENTRY = struct.Struct("!III")
#: Grants in one RATE_GRANTS message (12 bytes each: 3 kB, far below any MTU here).
MAX_GRANTS = 256


class WireError(ValueError):
    """Bytes that are not a railcc RoCEv2 message; the message says why."""


class Opcode(IntEnum):
    """BTH opcodes railcc uses (IB RC, RoCEv2 CNP, private 0xC0..)."""

    SEND_FIRST = 0x00
    SEND_MIDDLE = 0x01
    SEND_LAST = 0x02
    SEND_ONLY = 0x04
    ACKNOWLEDGE = 0x11
    CNP = 0x81
    FLOW_REQUEST = 0xC0
    RATE_GRANT = 0xC1
    FLOW_DONE = 0xC2
    RATE_GRANTS = 0xC3


DATA_OPCODES = frozenset({Opcode.SEND_FIRST, Opcode.SEND_MIDDLE, Opcode.SEND_LAST,
                          Opcode.SEND_ONLY})


@dataclass(frozen=True)
class Data:
    """A data packet of a message: ``padding`` bytes of it stand for message bytes."""

    dest_qp: int
    psn: int
    send_ts_ns: int
    message_id: int
    message_length: int
    offset: int
    padding: int = 0
    opcode: Opcode = Opcode.SEND_ONLY
    ack_req: bool = False
    becn: bool = False


@dataclass(frozen=True)
class Ack:
    """ACK (cumulative up to ``psn``) or NAK (resend from ``psn``), per the syndrome."""

    dest_qp: int
    psn: int
    msn: int = 0
    syndrome: int = SYNDROME_ACK

    @property
    def is_nak(self) -> bool:
        """True for a NAK (syndrome bits 7..5 = 011)."""
        return (self.syndrome >> 5) == 0b011


@dataclass(frozen=True)
class Cnp:
    """RoCEv2 congestion notification for the sender's QP ``dest_qp``; ``last_hop``
    (bit 0 of the first reserved byte, private): the receiving NIC was taking traffic
    from several QPs at once, so the queue is likely its own last hop (incast), which
    no re-path relieves (PLB ignores such CNPs)."""

    dest_qp: int
    last_hop: bool = False


@dataclass(frozen=True)
class FlowRequest:
    """A NIC asks the controller for a rate for one QP's flow."""

    qp: int
    src_ip: str
    dst_ip: str
    size_bytes: int
    src_port: int
    seq: int = 0


@dataclass(frozen=True)
class RateGrant:
    """The controller grants QP ``qp`` a sending rate in kbit/s."""

    qp: int
    rate_kbps: int
    seq: int = 0


@dataclass(frozen=True)
class FlowDone:
    """A NIC tells the controller that a QP's flow has finished."""

    qp: int
    src_ip: str
    dst_ip: str
    size_bytes: int
    seq: int = 0


@dataclass(frozen=True)
class RateGrants:
    """Several grants to the QPs of one NIC in one message, applied in order."""

    grants: tuple[RateGrant, ...]


Message = Union[Data, Ack, Cnp, FlowRequest, RateGrant, FlowDone, RateGrants]


def nak(dest_qp: int, expected_psn: int, msn: int = 0) -> Ack:
    """A NAK 'PSN sequence error' asking the sender to go back to ``expected_psn``."""
    return Ack(dest_qp, expected_psn, msn, SYNDROME_NAK_PSN)


def _u24(value: int, label: str) -> int:
    if not 0 <= value < PSN_MOD:
        raise WireError(f"{label}: must be 0..{PSN_MOD - 1}, got {value}")
    return value


def _bth(opcode: int, dest_qp: int, psn: int, ack_req: bool = False,
         becn: bool = False) -> bytes:
    return BTH.pack(opcode, 0, DEFAULT_PKEY, (BTH_BECN if becn else 0) | _u24(dest_qp, "dest_qp"),
                    (BTH_ACKREQ if ack_req else 0) | _u24(psn, "psn"))


def _ip(text: str, label: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError:
        raise WireError(f"{label}: not an IPv4 address: {text!r}") from None


def _ip_text(packed: bytes) -> str:
    return str(ipaddress.IPv4Address(packed))


def _pack(fmt: struct.Struct, label: str, *values: object) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as error:
        raise WireError(f"{label}: field out of range ({error})") from None


def encode(message: Message, icrc: int = 0) -> bytes:
    """The UDP payload (BTH, body, ICRC) of ``message``."""
    if isinstance(message, Data):
        if message.opcode not in DATA_OPCODES:
            raise WireError(f"data.opcode: must be a SEND opcode, got {message.opcode!r}")
        if message.padding < 0:
            raise WireError(f"data.padding: must be >= 0, got {message.padding}")
        body = _pack(DATA_HEADER, "data", message.send_ts_ns, message.message_id,
                     message.message_length, message.offset) + bytes(message.padding)
        head = _bth(message.opcode, message.dest_qp, message.psn, message.ack_req, message.becn)
    elif isinstance(message, Ack):
        if not 0 <= message.syndrome <= 0xFF:
            raise WireError(f"ack.syndrome: must be 0..255, got {message.syndrome}")
        head = _bth(Opcode.ACKNOWLEDGE, message.dest_qp, message.psn)
        body = bytes([message.syndrome]) + _u24(message.msn, "ack.msn").to_bytes(3, "big")
    elif isinstance(message, Cnp):
        head = _bth(Opcode.CNP, message.dest_qp, 0, becn=True)
        body = bytes([int(message.last_hop)]) + bytes(CNP_PAD_LEN - 1)
    elif isinstance(message, FlowRequest):
        head = _bth(Opcode.FLOW_REQUEST, message.qp, message.seq)
        body = _pack(_REQUEST, "flow_request", _ip(message.src_ip, "flow_request.src_ip"),
                     _ip(message.dst_ip, "flow_request.dst_ip"), message.size_bytes,
                     message.src_port)
    elif isinstance(message, RateGrant):
        head, body = (_bth(Opcode.RATE_GRANT, message.qp, message.seq),
                      _pack(_GRANT, "rate_grant", message.rate_kbps))
    elif isinstance(message, RateGrants):
        if not 1 <= len(message.grants) <= MAX_GRANTS:
            raise WireError(f"rate_grants: must carry 1..{MAX_GRANTS} grants, "
                            f"got {len(message.grants)}")
        head = _bth(Opcode.RATE_GRANTS, 0, 0)
        body = b"".join(_pack(_GRANTS_ENTRY, "rate_grants", _u24(g.qp, "rate_grants.qp"),
                              g.rate_kbps, _u24(g.seq, "rate_grants.seq"))
                        for g in message.grants)
    elif isinstance(message, FlowDone):
        head = _bth(Opcode.FLOW_DONE, message.qp, message.seq)
        body = _pack(_DONE, "flow_done", _ip(message.src_ip, "flow_done.src_ip"),
                     _ip(message.dst_ip, "flow_done.dst_ip"), message.size_bytes)
    else:
        raise WireError(f"cannot encode {type(message).__name__}")
    return head + body + struct.pack("!I", icrc & 0xFFFFFFFF)


def _expect(body: bytes, length: int, name: str, exact: bool = True) -> None:
    if len(body) < length or (exact and len(body) != length):
        raise WireError(f"{name}: body must be {'' if exact else 'at least '}{length} bytes "
                        f"after the BTH, got {len(body)}")


def decode(data: bytes) -> Message:
    """Parse one UDP payload; WireError says what is wrong (short, unknown opcode...)."""
    if len(data) < BTH_LEN + ICRC_LEN:
        raise WireError(f"packet: too short for BTH + ICRC ({BTH_LEN + ICRC_LEN} bytes), "
                        f"got {len(data)}")
    opcode, _flags, _pkey, qp_word, psn_word = BTH.unpack_from(data)
    dest_qp, psn = qp_word & BTH_U24, psn_word & BTH_U24
    body = bytes(data[BTH_LEN:-ICRC_LEN])
    try:
        op = Opcode(opcode)
    except ValueError:
        raise WireError(f"bth.opcode: unknown opcode 0x{opcode:02x}") from None
    if op in DATA_OPCODES:
        _expect(body, DATA_HEADER_LEN, "data", exact=False)
        ts, message_id, length, offset = DATA_HEADER.unpack_from(body)
        return Data(dest_qp, psn, ts, message_id, length, offset, len(body) - DATA_HEADER_LEN,
                    op, bool(psn_word & BTH_ACKREQ), bool(qp_word & BTH_BECN))
    if op is Opcode.ACKNOWLEDGE:
        _expect(body, AETH_LEN, "ack")
        return Ack(dest_qp, psn, int.from_bytes(body[1:4], "big"), body[0])
    if op is Opcode.CNP:
        _expect(body, CNP_PAD_LEN, "cnp")
        return Cnp(dest_qp, bool(body[0] & 1))
    if op is Opcode.FLOW_REQUEST:
        _expect(body, _REQUEST.size, "flow_request")
        src, dst, size, port = _REQUEST.unpack(body)
        return FlowRequest(dest_qp, _ip_text(src), _ip_text(dst), size, port, psn)
    if op is Opcode.RATE_GRANT:
        _expect(body, _GRANT.size, "rate_grant")
        return RateGrant(dest_qp, _GRANT.unpack(body)[0], psn)
    if op is Opcode.RATE_GRANTS:
        count, rest = divmod(len(body), _GRANTS_ENTRY.size)
        if rest or not 1 <= count <= MAX_GRANTS:
            raise WireError(f"rate_grants: body must be 1..{MAX_GRANTS} grants of "
                            f"{_GRANTS_ENTRY.size} bytes, got {len(body)} bytes")
        return RateGrants(tuple(RateGrant(qp, rate, seq) for qp, rate, seq
                                in _GRANTS_ENTRY.iter_unpack(body)))
    _expect(body, _DONE.size, "flow_done")
    src, dst, size = _DONE.unpack(body)
    return FlowDone(dest_qp, _ip_text(src), _ip_text(dst), size, psn)


def max_padding(mtu: int) -> int:
    """Most message bytes one data packet carries when IP packets are at most ``mtu``."""
    if mtu <= DATA_OVERHEAD:
        raise WireError(f"mtu: must be > {DATA_OVERHEAD} bytes of headers, got {mtu}")
    return mtu - DATA_OVERHEAD


def ip_packet_size(padding: int) -> int:
    """Size of the IPv4 packet carrying a data packet with ``padding`` message bytes."""
    return DATA_OVERHEAD + padding


def udp_source_port(qp: int, salt: int = 0) -> int:
    """Per-QP UDP source port (ECMP entropy) in 49152..65535, a pure function of (qp, salt)."""
    digest = zlib.crc32(struct.pack("!QQ", qp & (2**64 - 1), salt & (2**64 - 1)))
    return SOURCE_PORT_MIN + digest % (65536 - SOURCE_PORT_MIN)


def icrc(ip_header: bytes, udp_header: bytes, udp_payload: bytes) -> int:
    """The RoCEv2 invariant CRC of a packet whose UDP payload is ``encode(...)``'s output.

    Covers the masked IPv4 and UDP headers and the BTH and body (the trailing
    ICRC field is ignored). Returns the value to pass to ``encode(..., icrc=)``:
    as scapy does, the CRC-32's bytes go on the wire least significant first.
    """
    if len(ip_header) != IPV4_HEADER_LEN or len(udp_header) != UDP_HEADER_LEN:
        raise WireError("icrc: need a 20-byte IPv4 header and an 8-byte UDP header")
    ip = bytearray(ip_header)
    ip[1] = 0xFF  # TOS
    ip[8] = 0xFF  # TTL
    ip[10:12] = b"\xff\xff"  # header checksum
    udp = bytearray(udp_header)
    udp[6:8] = b"\xff\xff"  # checksum
    roce_payload = udp_payload[:-ICRC_LEN]
    bth = bytearray(roce_payload[:BTH_LEN])
    bth[4] = 0xFF  # FECN, BECN, reserved
    crc = zlib.crc32(b"\xff" * 8 + bytes(ip) + bytes(udp) + bytes(bth) +
                     bytes(roce_payload[BTH_LEN:])) & 0xFFFFFFFF
    return int.from_bytes(crc.to_bytes(4, "little"), "big")
