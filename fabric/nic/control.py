"""Validation of the agent's control requests (docs/run-folder.md): strict, clear errors.

Every function takes the decoded JSON object of one request and returns
frozen data, or raises ``RequestError`` saying which field was wrong.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from fabric.nic import wire
from fabric.nic.dcqcn import DcqcnParams
from fabric.nic.swift import SwiftParams

OPS = ("configure", "load", "start", "status", "set_rate", "finish", "quit")
TRANSPORTS = ("roce", "tcp")
#: The NIC datapaths: the compiled engine (fabric/nic/compiled.py) or the Python reference.
DATAPATHS = ("compiled", "python")
MAX_QPS = 256


class RequestError(ValueError):
    """A control request that cannot be honoured; the message says what was wrong."""


@dataclass(frozen=True)
class Nic:
    """One NIC of the server: its rail and IPv4 address."""

    rail: int
    ip: str


@dataclass(frozen=True)
class AgentConfig:
    """The ``configure`` request, validated."""

    nics: tuple[Nic, ...]
    line_mbps: float
    out_dir: str
    mtu: int = 9000
    window_packets: int = 32
    rto_ms: float = 50.0
    qps_per_connection: int = 1
    salt: int = 0
    ack_every: int = 8
    delay_sample_every: int = 1
    transport: str = "roce"
    #: Announce every flow to the fabric manager and send only once granted (fabric/nic/wire.py).
    announce: bool = False
    #: A QP idle this long after its last ACK reports its flow done (FLOW_DONE).
    linger_ms: float = 0.0
    #: A FLOW_REQUEST unanswered this long is sent again; after 3 tries the QP goes at line rate.
    grant_timeout_ms: float = 100.0
    #: Which datapath does the per-packet work (DATAPATHS).
    datapath: str = "compiled"
    #: DCQCN at the NICs (fabric/nic/dcqcn.py): receivers mark and send CNPs, senders run
    #: the rate machine; None: neither.
    dcqcn: DcqcnParams | None = None
    #: Swift at the NICs (fabric/nic/swift.py): senders adapt to the delay ACKs echo.
    swift: SwiftParams | None = None

    @property
    def congestion(self) -> DcqcnParams | SwiftParams | None:
        """The NIC congestion control in force, if any (at most one is set)."""
        return self.dcqcn or self.swift

    @property
    def plb_rounds(self) -> int:
        """PLB's congested rounds before a re-path (0: off)."""
        return self.congestion.plb_rounds if self.congestion else 0


@dataclass(frozen=True)
class SendSpec:
    """One message this server sends (``load.send[]``)."""

    id: int
    src_rail: int
    dst_ip: str
    size: int
    after: tuple[int, ...] = ()
    qps: int | None = None
    #: Switches on the way to ``dst_ip`` (Swift's target scales with it; 1 if not told).
    hops: int = 1


@dataclass(frozen=True)
class ExpectSpec:
    """One message this server receives (``load.expect[]``)."""

    id: int
    dst_rail: int
    size: int


def _keys(obj: Any, where: str, required: set[str], optional: set[str]) -> dict:
    if not isinstance(obj, dict):
        raise RequestError(f"{where}: must be an object, got {type(obj).__name__}")
    missing = sorted(required - obj.keys())
    if missing:
        raise RequestError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        raise RequestError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return obj


def _int(value: Any, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{where}: must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"{low}..{high}"
        raise RequestError(f"{where}: must be {bound}, got {value}")
    return value


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RequestError(f"{where}: must be a number > 0, got {value!r}")
    return float(value)


def _non_negative(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise RequestError(f"{where}: must be a number >= 0, got {value!r}")
    return float(value)


def _ip(value: Any, where: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise RequestError(f"{where}: not an IPv4 address: {value!r}") from None


def parse_request(line: bytes | str) -> tuple[str, dict]:
    """Decode one JSON request line into (op, object)."""
    try:
        obj = json.loads(line)
    except ValueError as error:
        raise RequestError(f"request: not JSON ({error})") from None
    if not isinstance(obj, dict):
        raise RequestError("request: must be a JSON object")
    op = obj.get("op")
    if op not in OPS:
        raise RequestError(f"op: must be one of {', '.join(OPS)}, got {op!r}")
    return op, obj


def parse_configure(obj: dict) -> AgentConfig:
    """Validate a ``configure`` request."""
    _keys(obj, "configure", {"op", "nics", "line_mbps", "out_dir"},
          {"mtu", "window_packets", "rto_ms", "qps_per_connection", "salt", "ack_every",
           "delay_sample_every", "transport", "announce", "linger_ms", "grant_timeout_ms",
           "datapath", "dcqcn", "swift"})
    if not isinstance(obj["nics"], list) or not obj["nics"]:
        raise RequestError("configure.nics: must be a non-empty list")
    nics = []
    for index, item in enumerate(obj["nics"]):
        where = f"configure.nics[{index}]"
        _keys(item, where, {"rail", "ip"}, set())
        nics.append(Nic(_int(item["rail"], f"{where}.rail", 0), _ip(item["ip"], f"{where}.ip")))
    if len({nic.rail for nic in nics}) != len(nics) or len({nic.ip for nic in nics}) != len(nics):
        raise RequestError("configure.nics: rails and ips must be unique")
    if not isinstance(obj["out_dir"], str) or not obj["out_dir"]:
        raise RequestError("configure.out_dir: must be a non-empty path")
    transport = obj.get("transport", "roce")
    if transport not in TRANSPORTS:
        raise RequestError(f"configure.transport: must be one of {', '.join(TRANSPORTS)}, "
                           f"got {transport!r}")
    datapath = obj.get("datapath", "compiled")
    if datapath not in DATAPATHS:
        raise RequestError(f"configure.datapath: must be one of {', '.join(DATAPATHS)}, "
                           f"got {datapath!r}")
    config = AgentConfig(
        nics=tuple(nics), line_mbps=_positive(obj["line_mbps"], "configure.line_mbps"),
        out_dir=obj["out_dir"],
        mtu=_int(obj.get("mtu", 9000), "configure.mtu", wire.DATA_OVERHEAD + 1, 65000),
        window_packets=_int(obj.get("window_packets", 32), "configure.window_packets", 1, 4096),
        rto_ms=_positive(obj.get("rto_ms", 50.0), "configure.rto_ms"),
        qps_per_connection=_int(obj.get("qps_per_connection", 1),
                                "configure.qps_per_connection", 1, MAX_QPS),
        salt=_int(obj.get("salt", 0), "configure.salt", 0),
        ack_every=_int(obj.get("ack_every", 8), "configure.ack_every", 1),
        delay_sample_every=_int(obj.get("delay_sample_every", 1),
                                "configure.delay_sample_every", 0),
        transport=transport, announce=_bool(obj.get("announce", False), "configure.announce"),
        linger_ms=_non_negative(obj.get("linger_ms", 0.0), "configure.linger_ms"),
        grant_timeout_ms=_positive(obj.get("grant_timeout_ms", 100.0), "configure.grant_timeout_ms"),
        datapath=datapath, dcqcn=_dcqcn(obj.get("dcqcn")), swift=_swift(obj.get("swift")))
    if config.dcqcn is not None and config.swift is not None:
        raise RequestError("configure: dcqcn and swift cannot both run")
    return config


def _dcqcn(value: Any) -> DcqcnParams | None:
    """``configure.dcqcn``: null, or a table of DcqcnParams fields (the rest default)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(f"configure.dcqcn: must be a table or null, got {value!r}")
    known = {f.name: f.type for f in dataclasses.fields(DcqcnParams)}
    _keys(value, "configure.dcqcn", set(), set(known))
    checked = {}
    for name, item in value.items():
        where = f"configure.dcqcn.{name}"
        if name in ("kmin_bytes", "kmax_bytes", "fast_recovery_steps", "plb_rounds"):
            checked[name] = _int(item, where, 0)
        else:
            checked[name] = _positive(item, where)
    params = DcqcnParams(**checked)
    if params.kmax_bytes <= params.kmin_bytes or params.pmax > 1 or params.g >= 1:
        raise RequestError("configure.dcqcn: need kmin_bytes < kmax_bytes, pmax <= 1, g < 1")
    return params


def _swift(value: Any) -> SwiftParams | None:
    """``configure.swift``: null, or a table of SwiftParams fields (the rest default)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(f"configure.swift: must be a table or null, got {value!r}")
    known = {f.name for f in dataclasses.fields(SwiftParams)}
    _keys(value, "configure.swift", set(), known)
    checked = {}
    for name, item in value.items():
        where = f"configure.swift.{name}"
        checked[name] = (_int(item, where, 0) if name in ("plb_rounds", "ack_every")
                         else _positive(item, where))
    params = SwiftParams(**checked)
    if params.max_mdf >= 1 or params.min_rate_fraction >= 1:
        raise RequestError("configure.swift: need max_mdf < 1 and min_rate_fraction < 1")
    return params


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"{where}: must be true or false, got {value!r}")
    return value


def parse_load(obj: dict, rails: set[int]) -> tuple[list[SendSpec], list[ExpectSpec]]:
    """Validate a ``load`` request against the configured rails."""
    _keys(obj, "load", {"op"}, {"send", "expect"})
    sends, expects = obj.get("send", []), obj.get("expect", [])
    if not isinstance(sends, list) or not isinstance(expects, list):
        raise RequestError("load.send / load.expect: must be lists")
    send_specs = []
    for index, item in enumerate(sends):
        where = f"load.send[{index}]"
        _keys(item, where, {"id", "src_rail", "dst_ip", "size"}, {"after", "qps", "hops"})
        rail = _int(item["src_rail"], f"{where}.src_rail", 0)
        if rail not in rails:
            raise RequestError(f"{where}.src_rail: no NIC on rail {rail} "
                               f"(configured: {sorted(rails)})")
        after = item.get("after", [])
        if not isinstance(after, list):
            raise RequestError(f"{where}.after: must be a list of ids")
        qps = item.get("qps")
        send_specs.append(SendSpec(
            _int(item["id"], f"{where}.id", 0, 2**64 - 1), rail,
            _ip(item["dst_ip"], f"{where}.dst_ip"),
            _int(item["size"], f"{where}.size", 1, 2**32 - 1),
            tuple(_int(dep, f"{where}.after", 0, 2**64 - 1) for dep in after),
            None if qps is None else _int(qps, f"{where}.qps", 1, MAX_QPS),
            _int(item.get("hops", 1), f"{where}.hops", 1, 64)))
    expect_specs = []
    for index, item in enumerate(expects):
        where = f"load.expect[{index}]"
        _keys(item, where, {"id", "dst_rail", "size"}, set())
        expect_specs.append(ExpectSpec(_int(item["id"], f"{where}.id", 0, 2**64 - 1),
                                       _int(item["dst_rail"], f"{where}.dst_rail", 0),
                                       _int(item["size"], f"{where}.size", 1, 2**32 - 1)))
    for label, specs in (("send", send_specs), ("expect", expect_specs)):
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise RequestError(f"load.{label}: duplicate message ids")
    return send_specs, expect_specs


def parse_start(obj: dict) -> int | None:
    """Validate a ``start`` request: the wall-clock start time in ns (None = now)."""
    _keys(obj, "start", {"op"}, {"at_ns"})
    at_ns = obj.get("at_ns")
    return None if at_ns is None else _int(at_ns, "start.at_ns", 0)


def parse_set_rate(obj: dict) -> tuple[str, float]:
    """Validate a ``set_rate`` request: (dst_ip, Mb/s)."""
    _keys(obj, "set_rate", {"op", "dst_ip", "mbps"}, set())
    return _ip(obj["dst_ip"], "set_rate.dst_ip"), _positive(obj["mbps"], "set_rate.mbps")


def parse_empty(obj: dict, op: str) -> None:
    """Validate a request that takes no arguments (status, finish, quit)."""
    _keys(obj, op, {"op"}, set())
