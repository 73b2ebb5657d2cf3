"""All-pairs reachability: every server pings every NIC of every other server."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fabric.net.network import Network


@dataclass
class PingReport:
    """Pings sent and the (source server, destination IP) pairs that got no reply."""

    sent: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def loss_pct(self) -> float:
        """Percent of pings without a reply."""
        return 100.0 * len(self.failures) / self.sent if self.sent else 0.0


def _ping_script(ips: list[str], count: int) -> str:
    loop = " ".join(ips)
    return (f"for ip in {loop}; do ping -n -q -c {count} -i 0.01 -W 1 $ip >/dev/null "
            f"|| echo FAIL $ip; done")


def all_pairs_ping(net: Network, count: int = 1) -> PingReport:
    """Ping from each server to all NICs of all other servers, servers in parallel."""
    topology = net.topology
    report = PingReport()

    def from_server(server: str) -> list[tuple[str, str]]:
        targets = [nic.ip for nic in topology.nics if nic.server != server]
        result = net.exec(server, ["sh", "-c", _ping_script(targets, count)],
                          timeout=30 + 2 * len(targets))
        return [(server, line.split()[1]) for line in result.stdout.splitlines()
                if line.startswith("FAIL ")]

    servers = [s.name for s in topology.servers()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for failures in pool.map(from_server, servers):
            report.failures += failures
    report.sent = sum(len([n for n in topology.nics if n.server != s]) for s in servers)
    return report


def ping(net: Network, server: str, ip: str, count: int = 3) -> bool:
    """True when ``server`` gets at least one reply from ``ip``."""
    try:
        result = net.exec(server, ["ping", "-n", "-q", "-c", str(count), "-i", "0.05",
                                   "-W", "1", ip], timeout=10 + count)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0
