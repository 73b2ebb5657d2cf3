"""Mininet's own CLI (`pingall`, `h1 ping h2`, `iperf`, `h1 ifconfig`, ...) on a railcc fabric.

The fabric is built by `fabric.Network` (batched, shaped, verified); this
module gives each server a real Mininet `Host` whose shell runs inside the
server's named namespace, wraps them in a `Mininet` object and hands that to
`mininet.cli.CLI`. Mininet's `iperf` is replaced: it runs `killall -9 iperf`,
which would end processes this project did not start.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from typing import TextIO

from mininet.cli import CLI
from mininet.clean import Cleanup
from mininet.link import Intf
from mininet.log import output, setLogLevel
from mininet.net import Mininet
from mininet.node import Host

from fabric.net.cleanup import clean_all
from fabric.net.faults import FaultInjector
from fabric.net.network import Network


class NamespaceHost(Host):
    """A Mininet host whose shell lives in an existing named network namespace."""

    def __init__(self, name: str, netns: str, **params) -> None:
        self.netns = netns
        super().__init__(name, inNamespace=False, **params)

    def _popen(self, cmd, **params):
        return super()._popen(["ip", "netns", "exec", self.netns, *cmd], **params)


class RailMininet(Mininet):
    """A Mininet object over an already running railcc `Network` (hosts only)."""

    def __init__(self, net: Network) -> None:
        super().__init__(topo=None, build=False, controller=None, autoSetMacs=False)
        self.railcc = net
        for server in net.topology.servers():
            host = NamespaceHost(server.name, net.netns(server.name))
            for nic in net.topology.nics_of(server.name):
                intf = Intf(nic.intf, node=host, port=nic.rail, up=None)
                intf.ip, intf.prefixLen, intf.mac = nic.ip, 16, nic.mac
            self.hosts.append(host)
            self.nameToNode[host.name] = host
        self.built = True

    def iperf(self, hosts=None, l4Type="TCP", udpBw="10M", fmt=None, seconds=5, port=5001):
        """iperf3 between two hosts (first and last by default); prints server and client rates."""
        client, server = hosts or [self.hosts[0], self.hosts[-1]]
        output(f"*** iperf3: {l4Type} bandwidth between {client} and {server}\n")
        listener = self.railcc.popen(server.name, ["iperf3", "-s", "-1", "-B", server.IP(),
                                                   "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        argv = ["iperf3", "-c", server.IP(), "-p", str(port), "-t", str(seconds)]
        if l4Type == "UDP":
            argv += ["-u", "-b", udpBw]
        out = client.cmd("sleep 0.3; " + " ".join(argv))
        listener.wait(timeout=10)
        rates = {}
        for line in out.splitlines():
            found = re.search(r"([\d.]+ [KMG]?bits/sec).*\b(sender|receiver)\s*$", line)
            if found:
                rates[found[2]] = found[1]
        result = [rates.get("receiver", "?"), rates.get("sender", "?")]
        output(f"*** Results: {result}\n")
        return result

    def configLinkStatus(self, src: str, dst: str, status: str) -> None:  # noqa: N802
        """`link t0r1 s2 down` (Mininet's command): every link between the two nodes down or
        up, switch or server, as a spec's link-down fault does it (fabric.net.faults)."""
        topology = self.railcc.topology
        links = [i for i, link in enumerate(topology.links)
                 if {link.a.node, link.b.node} == {src, dst}]
        if not links:
            output(f"*** no link between {src} and {dst} (railcc topo show NAME --links)\n")
            return
        FaultInjector(self.railcc, (), self.railcc.run_dir / "faults.jsonl").set_links(links,
                                                                                      status)
        output(f"*** {len(links)} link(s) {src}-{dst} {status}\n")

    def stop(self) -> None:
        """Stop the hosts' shells; the fabric itself is stopped by its Network."""
        for host in self.hosts:
            host.terminate()


def run_cli(net: Network, stdin: TextIO = sys.stdin) -> None:
    """Start Mininet's CLI on a live fabric; returns when the user exits (or stdin ends)."""
    setLogLevel("output")
    logging.getLogger("mininet").propagate = False  # Mininet prints for itself
    Cleanup.addCleanupCallback(lambda: clean_all())
    mininet = RailMininet(net)
    try:
        CLI(mininet, stdin=stdin)
    finally:
        mininet.stop()
