"""All-pairs reachability: every server pings every NIC of every other server."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fabric.net.network import Network


@dataclass
class PingReport:
    """The (source server, destination IP) pairs that answered and those that did not."""

    replied: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Pairs pinged (each reported by the ping loop, or missing from its output)."""
        return len(self.replied) + len(self.failures)

    @property
    def loss_pct(self) -> float:
        """Percent of pings without a reply."""
        return 100.0 * len(self.failures) / self.sent if self.sent else 0.0


def _ping_script(ips: list[str], count: int) -> str:
    loop = " ".join(ips)
    return (f"for ip in {loop}; do if ping -n -q -c {count} -i 0.01 -W 1 $ip >/dev/null; "
            f"then echo OK $ip; else echo FAIL $ip; fi; done")


def all_pairs_ping(net: Network, count: int = 1) -> PingReport:
    """Ping from each server to all NICs of all other servers, servers in parallel."""
    topology = net.topology
    report = PingReport()

    def from_server(server: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        targets = [nic.ip for nic in topology.nics if nic.server != server]
        result = net.exec(server, ["sh", "-c", _ping_script(targets, count)],
                          timeout=30 + 2 * len(targets))
        answered = {line.split()[1] for line in result.stdout.splitlines()
                    if line.startswith("OK ")}
        # A target the loop never reported (the script died) counts as a failure too.
        return ([(server, ip) for ip in targets if ip in answered],
                [(server, ip) for ip in targets if ip not in answered])

    servers = [s.name for s in topology.servers()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for replied, failures in pool.map(from_server, servers):
            report.replied += replied
            report.failures += failures
    return report


def ping(net: Network, server: str, ip: str, count: int = 3) -> bool:
    """True when ``server`` gets at least one reply from ``ip``."""
    try:
        result = net.exec(server, ["ping", "-n", "-q", "-c", str(count), "-i", "0.05",
                                   "-W", "1", ip], timeout=10 + count)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0
