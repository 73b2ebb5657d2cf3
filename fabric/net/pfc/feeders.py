"""Which ingress ports fed which egress queue lately, from OVS's own datapath flows.

ovs-vswitchd answers ``dpctl/dump-flows --names`` on its unixctl socket (JSON-RPC,
no ``ovs-appctl`` fork): every datapath flow with its input port, its output
ports and how long ago it last carried a packet (``used:0.012s``). A flow is
exact on what the switch's rules looked at (the ECMP hash fields included), so
the flows show the very path each hashed flow took: the feeders of a queue are
the input ports of the flows that output to it and were used within the window.
About 3 ms for 250 flows on rail-2tier-small (measured), so the loop refreshes
the map on a new congestion and at most every `REFRESH_S` while any lasts.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Iterable, Mapping

#: A map older than this is refreshed before a newly congested queue is decided.
FRESH_S = 0.020
#: While a queue stays congested, its feeders are read again this often.
REFRESH_S = 0.100
#: A flow used within this long before the dump fed its queue "in the last interval".
WINDOW_S = 0.100

_IN_PORT = re.compile(r"in_port\(([^)]+)\)")
_USED = re.compile(r"used:(never|[\d.]+s)")


def unixctl(path: str | Path, method: str, params: list[str], timeout: float = 2.0) -> str:
    """Call one unixctl command of an OVS daemon over its socket; its text answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"method": method, "params": params, "id": 0}).encode())
        decoder = json.JSONDecoder()
        buffer = ""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"{path}: closed before answering {method}")
            buffer += chunk.decode()
            try:
                reply, _ = decoder.raw_decode(buffer)
            except ValueError:
                continue
            if reply.get("error"):
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result") or ""


def parse_flows(text: str, known: set[str], window_s: float = WINDOW_S
                ) -> dict[str, set[str]]:
    """Output interface -> input interfaces of the flows used within ``window_s``, from
    ``dpctl/dump-flows --names`` text (interfaces outside ``known`` are ignored)."""
    fed: dict[str, set[str]] = {}
    for line in text.splitlines():
        source = _IN_PORT.search(line)
        used = _USED.search(line)
        if not source or not used or used.group(1) == "never" or "actions:" not in line:
            continue
        if float(used.group(1)[:-1]) > window_s or source.group(1) not in known:
            continue
        actions = line.rsplit("actions:", 1)[1]
        for token in re.split(r"[,()]", actions):
            if token in known and token != source.group(1):
                fed.setdefault(token, set()).add(source.group(1))
    return fed


class FeederMap:
    """Feeders of every watched queue, from the datapath flows of each ovs-vswitchd.

    ``gate_of`` maps every switch interface (as an ingress) to the gate that a pause of
    it closes: the egress interface at the link's other end."""

    def __init__(self, sockets: Iterable[str | Path], gate_of: Mapping[str, str]) -> None:
        self.sockets = list(sockets)
        self.gate_of = dict(gate_of)
        self.known = set(self.gate_of)
        self.fed: dict[str, set[str]] = {}
        self.read_at = float("-inf")
        self.reads = 0

    def refresh(self, now: float) -> None:
        """Read every shard's datapath flows again."""
        fed: dict[str, set[str]] = {}
        for path in self.sockets:
            text = unixctl(path, "dpctl/dump-flows", ["--names"])
            for queue, sources in parse_flows(text, self.known).items():
                fed.setdefault(queue, set()).update(sources)
        self.fed = fed
        self.read_at = now
        self.reads += 1

    def feeders(self, queue: str) -> set[str]:
        """The gates whose traffic entered the switch and left by ``queue`` lately."""
        return {self.gate_of[source] for source in self.fed.get(queue, ())
                if source in self.gate_of}
