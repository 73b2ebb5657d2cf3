"""Kernel UDP sockets of the emulated NIC: one receive socket per NIC, one send socket per QP port.

Receive: ``(nic_ip, 4791)`` with a large buffer (``SO_RCVBUFFORCE``, we are
root in the namespace). Send: ``(nic_ip, udp_source_port(qp, salt))``, so
each QP's packets carry its own source port (ECMP entropy); QPs whose ports
collide share the socket. Send sockets are non-blocking and set
``IP_RECVERR`` so a full local qdisc reports ENOBUFS instead of silently
dropping: such sends return False and the caller retries later, as a NIC
whose queue is full waits instead of dropping.
"""

from __future__ import annotations

import errno
import logging
import socket

from fabric.nic import wire

log = logging.getLogger(__name__)

RCVBUF_BYTES = 4 * 1024 * 1024
SNDBUF_BYTES = 1024 * 1024
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: sendto errors meaning "not sent, try again" (queue full, or a pending ICMP error).
_RETRY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED,
                           errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})
_SNMP = "/proc/net/snmp"


def udp_rcvbuf_errors(path: str = _SNMP) -> int:
    """The namespace's UDP RcvbufErrors counter (this process's netns), 0 if unreadable."""
    try:
        with open(path) as handle:
            lines = [line.split() for line in handle if line.startswith("Udp:")]
    except OSError:
        return 0
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        return 0
    return int(lines[1][lines[0].index("RcvbufErrors")])


def _set_buffer(sock: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


class UdpTransport:
    """The agent's UDP sockets; ``send`` implements agent_core.Transport."""

    def __init__(self, nic_ips: list[str], port: int = wire.ROCE_PORT) -> None:
        self.receivers: dict[str, socket.socket] = {}
        self.senders: dict[tuple[str, int], socket.socket] = {}
        self.retries = 0
        self.refused = 0
        self._drops_at_start = udp_rcvbuf_errors()
        try:
            for ip in nic_ips:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, RCVBUF_BYTES)
                sock.bind((ip, port))
                sock.setblocking(False)
                self.receivers[ip] = sock
        except OSError:
            self.close()
            raise

    def _sender(self, nic_ip: str, src_port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, SNDBUF_BYTES)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            sock.bind((nic_ip, src_port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.senders[(nic_ip, src_port)] = sock
        return sock

    def fd_for(self, nic_ip: str, src_port: int) -> socket.socket:
        """The socket that sends from (nic_ip, src_port) (the compiled datapath sends on it)."""
        return self.senders.get((nic_ip, src_port)) or self._sender(nic_ip, src_port)

    def send(self, nic_ip: str, src_port: int, dst_ip: str, payload: bytes | memoryview) -> bool:
        """Send one datagram from (nic_ip, src_port) to (dst_ip, 4791); False: retry later."""
        sock = self.senders.get((nic_ip, src_port)) or self._sender(nic_ip, src_port)
        try:
            sock.sendto(payload, (dst_ip, wire.ROCE_PORT))
        except OSError as error:
            if error.errno not in _RETRY_ERRNOS:
                raise
            self.retries += 1
            self.refused += error.errno == errno.ENOBUFS
            if self.retries in (1, 10, 100, 1000) or self.retries % 10000 == 0:
                log.info("send from %s:%d to %s deferred (%s); %d deferrals so far", nic_ip,
                         src_port, dst_ip, errno.errorcode.get(error.errno, error.errno),
                         self.retries)
            return False
        return True

    def sends_refused(self) -> int:
        """Sends the NIC's own qdisc dropped and reported (ENOBUFS): counted by the qdisc as
        drops, never sent by the NIC (it sends them again later)."""
        return self.refused

    def socket_drops(self) -> int:
        """Datagrams the kernel dropped for full receive buffers since the sockets opened."""
        return max(0, udp_rcvbuf_errors() - self._drops_at_start)

    def close(self) -> None:
        """Close every socket."""
        for sock in [*self.receivers.values(), *self.senders.values()]:
            sock.close()
        self.receivers.clear()
        self.senders.clear()
