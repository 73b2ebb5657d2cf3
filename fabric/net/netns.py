"""Entering a named network namespace from Python (per thread) and per-interface knobs.

Used for what has no batch tool: transmit-checksum offload (PLATFORM.md: TCP
over veth stalls on the userspace datapath unless it is off), sysctls and
interface statistics: pyroute2 (setns, rtnetlink) and plain ethtool ioctls.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from contextlib import contextmanager
from typing import Iterable, Iterator

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.ethtool import Ethtool

from fabric.net.sh import FabricError

#: Legacy ethtool ioctl commands turning off what `ethtool -K IF tx off tso off` does: one
#: system call each (pyroute2's Ethtool reads the feature strings first, ~15x slower, which
#: counts at a thousand interfaces).
ETHTOOL_STXCSUM, ETHTOOL_STSO = 0x17, 0x1F
SIOCETHTOOL = 0x8946


@contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body in network namespace ``name`` (this thread only; None = stay)."""
    if name is None:
        yield
        return
    if not os.path.exists(f"/run/netns/{name}"):
        raise FabricError(f"network namespace {name!r} does not exist")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            pyroute2_netns.setns(name, flags=0)
        except OSError as exc:
            raise FabricError(f"setns {name}: {os.strerror(exc.errno)}") from None
        try:
            yield
        finally:
            pyroute2_netns.setns(own, flags=0)
    finally:
        os.close(own)


def disable_tx_checksum(intfs: Iterable[str], netns: str | None = None) -> None:
    """Turn transmit checksum offload (and with it TSO) off on each interface."""
    with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for intf in intfs:
            for command, feature in ((ETHTOOL_STXCSUM, "tx-checksumming"),
                                     (ETHTOOL_STSO, "tcp-segmentation-offload")):
                value = ctypes.create_string_buffer(struct.pack("II", command, 0))
                request = struct.pack("16sP", intf.encode(), ctypes.addressof(value))
                try:
                    fcntl.ioctl(sock, SIOCETHTOOL, request)
                except OSError as exc:
                    raise FabricError(f"{netns or 'root'}:{intf}: {feature} off failed: "
                                      f"{exc.strerror}") from None


def tx_checksum_enabled(intf: str, netns: str | None = None) -> bool:
    """Read back the transmit checksum offload setting of one interface."""
    with in_netns(netns):
        ethtool = Ethtool()
        try:
            return bool(ethtool.get_offload_flags(intf)["tx-checksumming"])
        finally:
            ethtool.close()


def link_drops(netns: str | None = None) -> dict[str, int]:
    """Per interface of a namespace: the kernel's rx + tx dropped counters (rtnetlink)."""
    with in_netns(netns):
        with IPRoute() as ipr:
            drops = {}
            for link in ipr.get_links():
                stats = link.get_attr("IFLA_STATS64") or {}
                drops[link.get_attr("IFLA_IFNAME")] = (int(stats.get("rx_dropped", 0))
                                                       + int(stats.get("tx_dropped", 0)))
            return drops


def write_sysctls(values: dict[str, str], netns: str | None = None) -> None:
    """Write /proc/sys/net entries (e.g. 'ipv6/conf/all/disable_ipv6': '1') in a namespace."""
    with in_netns(netns):
        for key, value in values.items():
            with open(f"/proc/sys/net/{key}", "w") as handle:
                handle.write(value)
