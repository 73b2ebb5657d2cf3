"""Kernel-TCP transport of the NIC agent (``configure.transport: "tcp"``).

Every NIC listens on ``(nic_ip, 4792)``. Messages go over one TCP connection
per (source NIC, destination IP), bound to the source NIC's address (policy
routing puts it on that rail), with TCP_NODELAY, one after another: a 16-byte
header (message id u64, size u64, network order) then ``size`` bytes. The
receiver replies the id (u64) once the whole message arrived. ``after``
dependencies work as in RoCE mode. Records: ``start_ns`` = first byte written
to the socket, ``acked_ns`` = the receiver's reply read back (so after the
last byte was written), ``retransmits`` = growth of the connection's TCP_INFO
``total_retrans`` while the message was outstanding (approximate when messages
share the kernel's buffers); ``packets``, ``timeouts``, ``naks`` are 0, ``qps``
is 1 and ``delays.csv`` stays empty. Every counter stays 0: the kernel
retransmits, so packet conservation does not apply. The NIC's htb shapes the
rate; ``set_rate`` sets SO_MAX_PACING_RATE on the connections to ``dst_ip``.
A connection that fails is reopened ``RETRY_NS`` later and its unacknowledged
messages are sent again (the receiver restarts a message at its header).
Sockets are non-blocking and registered in the agent's selector; ``pump``
releases messages and reopens connections.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
from collections import deque

from fabric.nic.control import AgentConfig
from fabric.nic.port import Clock, earliest
from fabric.nic.records import SentMessage
from fabric.nic.tcp_book import ACK, Deframer, TcpBook, frame_header

log = logging.getLogger(__name__)

TCP_PORT = 4792
CHUNK = 256 * 1024
RETRY_NS = 100_000_000
READ_BATCH = 16
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)
_ZEROS = memoryview(bytes(CHUNK))
_RW = selectors.EVENT_READ | selectors.EVENT_WRITE


def total_retrans(sock: socket.socket | None) -> int:
    """The socket's TCP_INFO ``tcpi_total_retrans`` (0 if unavailable)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return 0
    return struct.unpack_from("=I", info, 100)[0] if len(info) >= 104 else 0


class _Endpoint:
    """A registered socket: its selector interest and event handler."""

    def __init__(self, sock: socket.socket | None = None, handler=None) -> None:
        self.sock, self.handler, self.mask = sock, handler, 0


class _Conn(_Endpoint):
    """One outgoing connection (source NIC -> destination IP) and its message queue."""

    def __init__(self, nic_ip: str, dst_ip: str) -> None:
        super().__init__()
        self.nic_ip, self.dst_ip = nic_ip, dst_ip
        self.connected, self.retry_at = False, None
        self.queue: deque[SentMessage] = deque()
        self.current: SentMessage | None = None
        self.head, self.left, self.base = b"", 0, 0
        self.inflight: dict[int, tuple[SentMessage, int]] = {}
        self.acks = bytearray()


class _Peer(_Endpoint):
    """One accepted connection: the stream parser and the id replies not yet written."""

    def __init__(self, sock: socket.socket, rail: int) -> None:
        super().__init__(sock)
        self.rail, self.deframer, self.out = rail, Deframer(), bytearray()


class TcpCore(TcpBook):
    """The agent's state in TCP mode; the same operations as ``AgentCore``."""

    def __init__(self, server: str, config: AgentConfig, selector: selectors.BaseSelector,
                 clock: Clock) -> None:
        super().__init__(server, config, clock)
        self.selector = selector
        self.rates_by_dst: dict[str, float] = {}
        self.conns: dict[tuple[str, str], _Conn] = {}
        self.peers: set[_Peer] = set()
        self.listeners: list[_Endpoint] = []
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)

    def listen(self) -> None:
        """Listen on (nic_ip, 4792) for every NIC (OSError: nothing stays open)."""
        try:
            for nic in self.config.nics:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                accept = lambda listener, rail=nic.rail: self._accept(listener, rail)  # noqa: E731
                self.listeners.append(_Endpoint(sock, accept))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((nic.ip, TCP_PORT))
                sock.listen(64)
                sock.setblocking(False)
                self._interest(self.listeners[-1], selectors.EVENT_READ)
        except OSError:
            self.close()
            raise

    def set_rate(self, dst_ip: str, mbps: float) -> int:
        """SO_MAX_PACING_RATE on every connection toward ``dst_ip`` (now and later)."""
        self.rates_by_dst[dst_ip] = mbps
        conns = [conn for conn in self.conns.values() if conn.dst_ip == dst_ip]
        for conn in conns:
            self._pace(conn)
        return len(conns)

    def on_ack(self, conn: _Conn, mid: int) -> None:
        """The receiver confirmed message ``mid`` on ``conn``."""
        entry = conn.inflight.pop(mid, None)
        if entry is not None:
            self.acked(entry[0], total_retrans(conn.sock) - entry[1])

    def pump(self) -> int | None:
        """Start due messages, reopen failed connections; monotonic ns of the next deadline."""
        now = self.clock.mono_ns()
        for message in self.release(now):
            key = (self.nic_by_rail[message.src_rail].ip, message.dst_ip)
            conn = self.conns.get(key)
            if conn is None:
                conn = self.conns[key] = _Conn(*key)
                self._connect(conn)
            conn.queue.append(message)
            if conn.connected:
                self._interest(conn, _RW)
        deadline = self.next_start()
        for conn in self.conns.values():
            if conn.retry_at is not None and conn.retry_at <= now:
                self._connect(conn)
            deadline = earliest(deadline, conn.retry_at)
        return deadline

    # -- sockets -------------------------------------------------------------------
    def _interest(self, endpoint: _Endpoint, mask: int) -> None:
        if mask == endpoint.mask:
            return
        if endpoint.mask == 0:
            self.selector.register(endpoint.sock, mask, endpoint.handler)
        elif mask == 0:
            self.selector.unregister(endpoint.sock)
        else:
            self.selector.modify(endpoint.sock, mask, endpoint.handler)
        endpoint.mask = mask

    def _close(self, endpoint: _Endpoint) -> None:
        if endpoint.sock is not None:
            self._interest(endpoint, 0)
            endpoint.sock.close()
            endpoint.sock = None

    def _pace(self, conn: _Conn) -> None:
        mbps = self.rates_by_dst.get(conn.dst_ip)
        if mbps is not None and conn.sock is not None:
            rate = min(int(mbps * 1e6 / 8), 2**31 - 1)
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, rate)
            except OSError as error:
                log.warning("SO_MAX_PACING_RATE toward %s: %s", conn.dst_ip, error)

    def _connect(self, conn: _Conn) -> None:
        conn.retry_at, conn.connected = None, False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((conn.nic_ip, 0))
            sock.setblocking(False)
            code = sock.connect_ex((conn.dst_ip, TCP_PORT))
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
        except OSError as error:
            sock.close()
            self._broken(conn, error)
            return
        conn.sock, conn.mask = sock, 0
        conn.handler = lambda _sock, c=conn: self._on_conn(c)
        self._pace(conn)
        self._interest(conn, selectors.EVENT_WRITE)

    def _broken(self, conn: _Conn, why: object) -> None:
        """Close ``conn``; its unacknowledged messages go again on a new connection later."""
        again = [message for message, _ in conn.inflight.values()]
        self._close(conn)
        conn.queue.extendleft(reversed(again + ([conn.current] if conn.current else [])))
        conn.inflight.clear()
        conn.acks.clear()
        conn.current, conn.head, conn.connected = None, b"", False
        if conn.queue:
            log.warning("connection %s -> %s: %s; retrying", conn.nic_ip, conn.dst_ip, why)
            conn.retry_at = self.clock.mono_ns() + RETRY_NS

    def _on_conn(self, conn: _Conn) -> None:
        try:
            if not conn.connected:
                code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                conn.connected = True
            while True:  # the receiver's 8-byte replies
                try:
                    size = conn.sock.recv_into(self.buf)
                except BlockingIOError:
                    break
                if size == 0:
                    raise ConnectionError("closed by the receiver")
                conn.acks += self.view[:size]
                whole = len(conn.acks) - len(conn.acks) % ACK.size
                for (mid,) in ACK.iter_unpack(bytes(conn.acks[:whole])):
                    self.on_ack(conn, mid)
                del conn.acks[:whole]
            self._write(conn)
        except OSError as error:
            self._broken(conn, error)
            return
        busy = conn.current is not None or conn.queue
        self._interest(conn, _RW if busy else selectors.EVENT_READ)

    def _write(self, conn: _Conn) -> None:
        while conn.current is not None or conn.queue:
            if conn.current is None:
                message = conn.current = conn.queue.popleft()
                conn.head, conn.left = frame_header(message.id, message.size), message.size
                conn.base = total_retrans(conn.sock)
                if message.start_ns is None:
                    message.start_ns = self.clock.wall_ns()
            try:
                sent = conn.sock.sendmsg([conn.head, _ZEROS[:min(conn.left, CHUNK)]])
            except BlockingIOError:
                return
            head = min(sent, len(conn.head))
            conn.head, conn.left = conn.head[head:], conn.left - (sent - head)
            if not conn.head and conn.left == 0:
                conn.inflight[conn.current.id] = (conn.current, conn.base)
                conn.current = None

    def _accept(self, listener: socket.socket, rail: int) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = _Peer(sock, rail)
            peer.handler = lambda _sock, p=peer: self._on_peer(p)
            self.peers.add(peer)
            self._interest(peer, selectors.EVENT_READ)

    def _on_peer(self, peer: _Peer) -> None:
        try:
            for _ in range(READ_BATCH):
                try:
                    size = peer.sock.recv_into(self.buf)
                except BlockingIOError:
                    break
                if size == 0:
                    self.peers.discard(peer)
                    self._close(peer)
                    return
                wall = self.clock.wall_ns()
                for piece in peer.deframer.feed(self.view[:size]):
                    if self.on_piece(peer.rail, *piece, wall):
                        peer.out += ACK.pack(piece[0])
            if peer.out:
                del peer.out[:peer.sock.send(peer.out)]
        except BlockingIOError:
            pass
        except OSError as error:
            log.warning("incoming connection on rail %d: %s", peer.rail, error)
            self.peers.discard(peer)
            self._close(peer)
            return
        self._interest(peer, _RW if peer.out else selectors.EVENT_READ)

    def close(self) -> None:
        """Close every socket (unregistering it from the selector first)."""
        for endpoint in [*self.conns.values(), *self.peers, *self.listeners]:
            self._close(endpoint)
        self.peers.clear()
