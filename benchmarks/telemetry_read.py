"""CPU per queue-telemetry read: the sampler's one-pass rtnetlink decoder against the
generic one it replaced, on a live fabric with no traffic, same run.

    .venv/bin/python benchmarks/telemetry_read.py [--fabrics rail-2tier,rail-64x8-8pods]
        [--reads 30] [--repeat 5]

Builds each fabric (no controller), then times ``--reads`` reads of every switch queue
per repetition with each decoder, interleaved: ``one-pass`` is
`fabric.measure.rtnetlink.Socket.root_qdiscs`, which the telemetry sampler calls;
``generic`` decodes the same dump through `Socket.dump` and `attributes` (a dict of
every attribute of every message, the decoder before 2026-12-07). CPU = the reading
thread's CPU time per read (median over repetitions); both must return the same
counters. Appends the table to RESULTS.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.build_fabric import fabrics  # noqa: E402
from experiments.runner import port_infos  # noqa: E402
from fabric.measure import rtnetlink as rt  # noqa: E402
from fabric.measure.machine import cpu_model  # noqa: E402
from fabric.net import ovs  # noqa: E402
from fabric.net.netns import in_netns  # noqa: E402
from fabric.net.network import Network  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def generic_root_qdiscs(sock: rt.Socket, kind: str) -> dict[int, tuple[int, ...]]:
    """The decoder before the one-pass one: every message and attribute into dicts."""
    want = kind.encode() + b"\0"
    found = {}
    for msg_type, payload in sock.dump(rt.RTM_GETQDISC, rt.TCMSG.pack(0, 0, 0, 0, 0)):
        if msg_type != rt.RTM_NEWQDISC:
            continue
        _, index, _, parent, _ = rt.TCMSG.unpack_from(payload)
        if parent != rt.TC_H_ROOT:
            continue
        attrs = rt.attributes(payload, rt.TCMSG.size, len(payload))
        if bytes(attrs.get(rt.TCA_KIND, b"")) != want or rt.TCA_STATS2 not in attrs:
            continue
        nested = rt.attributes(attrs[rt.TCA_STATS2], 0, len(attrs[rt.TCA_STATS2]))
        sent_bytes, packets = rt.STATS_BASIC.unpack_from(nested[rt.TCA_STATS_BASIC])
        qlen, backlog, drops, _, _ = rt.STATS_QUEUE.unpack_from(nested[rt.TCA_STATS_QUEUE])
        found[index] = (sent_bytes, packets, drops, backlog, qlen)
    return found


def cpu_per_read(read, reads: int) -> float:
    """The calling thread's CPU time per call of ``read``, ms."""
    started = time.thread_time()
    for _ in range(reads):
        read()
    return (time.thread_time() - started) / reads * 1e3


def measure(topology, reads: int, repeat: int) -> dict:
    """Queue count and the median CPU per read of each decoder on one live fabric."""
    net = Network(topology, None, run_dir=Path(tempfile.mkdtemp(prefix="railcc-tel-")))
    net.start()
    try:
        by_netns: dict[str | None, set[str]] = {}
        for port in port_infos(net):
            if port.on_switch:
                by_netns.setdefault(port.netns, set()).add(port.dev)
        sockets = []
        for ns in by_netns:
            with in_netns(ns):  # a netlink socket answers for the namespace it was made in
                sockets.append(rt.Socket())
        for sock in sockets:
            if sock.root_qdiscs("htb") != generic_root_qdiscs(sock, "htb"):
                raise SystemExit("telemetry_read: the two decoders disagree")
        onepass, generic = [], []
        for _ in range(repeat):
            onepass.append(cpu_per_read(lambda: [s.root_qdiscs("htb") for s in sockets], reads))
            generic.append(cpu_per_read(
                lambda: [generic_root_qdiscs(s, "htb") for s in sockets], reads))
        for sock in sockets:
            sock.close()
        return {"queues": sum(len(devs) for devs in by_netns.values()),
                "one-pass": statistics.median(onepass), "generic": statistics.median(generic)}
    finally:
        net.stop()


def main() -> None:
    """Measure, print and record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fabrics", default="rail-2tier,rail-64x8-8pods")
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    topologies = fabrics(args.fabrics.split(","))
    ovs.ensure_daemon()
    rows = []
    for topology in topologies:
        row = measure(topology, args.reads, args.repeat)
        rows.append((topology.name, row))
        print(f"{topology.name:<18} {row['queues']:5d} queues  one-pass {row['one-pass']:6.2f} ms"
              f"  generic {row['generic']:6.2f} ms  ({row['generic'] / row['one-pass']:.2f}x)",
              flush=True)
    record(rows, args)


def record(rows: list[tuple[str, dict]], args: argparse.Namespace) -> None:
    """Append the table, with machine and date, to RESULTS.md."""
    cpu = cpu_model()
    lines = [
        f"\n## telemetry_read.py, {datetime.date.today()} ({os.cpu_count()} cores, {cpu}, "
        f"kernel {platform.release()})\n",
        f"Command: `.venv/bin/python benchmarks/telemetry_read.py {' '.join(sys.argv[1:])}`\n",
        f"CPU of the reading thread per read of every switch queue (median of {args.repeat} "
        f"sets of {args.reads} reads, decoders interleaved, no traffic); at the default "
        "10 Hz, 1 ms per read is 1 % of a core.\n",
        "| fabric | switch queues | one-pass (ms) | generic (ms) | generic / one-pass |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {row['queues']} | {row['one-pass']:.2f} | {row['generic']:.2f} | "
              f"{row['generic'] / row['one-pass']:.2f} |" for name, row in rows]
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
