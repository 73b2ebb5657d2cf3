"""Entering a named network namespace from Python (per thread) and per-interface knobs.

Used for what has no batch tool: transmit-checksum offload (PLATFORM.md: TCP
over veth stalls on the userspace datapath unless it is off) and sysctls.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import os
import socket
import struct
from contextlib import contextmanager
from typing import Iterable, Iterator

from fabric.net.sh import FabricError

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
ETHTOOL_STSO = 0x1f
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise FabricError(f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body in network namespace ``name`` (this thread only; None = stay)."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise FabricError(f"network namespace {name!r} does not exist") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def disable_tx_checksum(intfs: Iterable[str], netns: str | None = None) -> None:
    """Turn transmit checksum offload (and with it TSO) off on each interface."""
    with in_netns(netns):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for intf in intfs:
                for command in (ETHTOOL_STXCSUM, ETHTOOL_STSO):  # as `ethtool -K IF tx off`
                    value = array.array("I", [command, 0])
                    request = struct.pack("16sP", intf.encode(), value.buffer_info()[0])
                    try:
                        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)
                    except OSError as exc:
                        raise FabricError(f"{netns or 'root'}:{intf}: tx offload off failed: "
                                          f"{exc.strerror}") from None


def tx_checksum_enabled(intf: str, netns: str | None = None) -> bool:
    """Read back the transmit checksum offload setting of one interface."""
    with in_netns(netns):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            value = array.array("I", [ETHTOOL_STXCSUM - 1, 0])  # ETHTOOL_GTXCSUM = 0x16
            request = struct.pack("16sP", intf.encode(), value.buffer_info()[0])
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)
            return bool(value[1])


def write_sysctls(values: dict[str, str], netns: str | None = None) -> None:
    """Write /proc/sys/net entries (e.g. 'ipv6/conf/all/disable_ipv6': '1') in a namespace."""
    with in_netns(netns):
        for key, value in values.items():
            with open(f"/proc/sys/net/{key}", "w") as handle:
                handle.write(value)
