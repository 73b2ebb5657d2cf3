"""Event data the shim hands to algorithms (plain, frozen, no os-ken types)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortCounters:
    """Cumulative counters of one switch port, as an OpenFlow port-stats reply reports them."""

    port: int
    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    duration_s: float = 0.0
