"""Was a backlogged switch egress late, or had it drained? htb's own token level says.

    .venv/bin/python benchmarks/htb_tokens.py SPEC [--ports REGEX] [--seconds 5] [--delay 6]

Runs SPEC with `railcc run` and, from ``--delay`` seconds in, samples every 100 ms the
htb class 1:1 of each switch port whose interface matches ``--ports`` in the run's
first OVS shard (one in-process RTM_GETTCLASS per port: backlog, bytes sent, tokens).
htb stores a class's tokens as of its last dequeue, in 64 ns ticks of sending time:
credit at that dequeue minus the frame it sent. A dequeue on time leaves about
-1 frame; one late by L leaves -1 frame + L (capped at the burst); after an idle
spell it leaves up to burst - 1 frame. So over the samples taken with a frame queued,
tokens near -1 frame mean the qdisc was sending on time, and a link the run's verdict
calls short of its rate while its qdisc was on time went short because its queue
emptied between two telemetry samples (no work, or work held up before the qdisc),
not because the qdisc was late. Prints the distribution and the run's verdict.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyroute2 import NetNS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.net.cleanup import list_netns  # noqa: E402
CLASS_1_1 = 0x10001


def first_shard_netns(timeout_s: float = 60.0) -> str:
    """The namespace of the run's first OVS shard, once it exists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [name for name in list_netns() if re.fullmatch(r"railcc-\w+-ovs0", name)]
        if found:
            return found[0]
        time.sleep(0.5)
    raise SystemExit("htb_tokens: no railcc shard namespace appeared")


def sample(netns: str, pattern: str, seconds: float) -> list[tuple[str, int, int, int, int]]:
    """(port, backlog bytes, tokens, rate bytes/s, mtu) of every matching port, every 100 ms."""
    ns = NetNS(netns)
    try:
        ports = [(link["index"], link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU"))
                 for link in ns.get_links()]
        ports = [port for port in ports if re.search(pattern, port[1])]
        rows = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            for index, name, mtu in ports:
                for cls in ns.get_classes(index=index):
                    if cls["handle"] != CLASS_1_1:
                        continue
                    queue = cls.get_attr("TCA_STATS2").get_attr("TCA_STATS_QUEUE")
                    xstats = cls.get_attr("TCA_XSTATS")
                    rate = cls.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")["rate"]
                    tokens = xstats["tokens"]
                    tokens -= (1 << 32) if tokens >= 1 << 31 else 0  # signed in the kernel
                    rows.append((name, queue["backlog"], tokens, rate, mtu))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        return rows
    finally:
        ns.close()


def main() -> None:
    """Run the spec, sample its ports, print what the tokens say."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--ports", default=r"-t\d+r\d+p\d+$", help="interface regex (ToR ports)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--delay", type=float, default=6.0, help="seconds from launch to sampling")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="railcc-tokens-")) / "run"
    run = subprocess.Popen([str(ROOT / ".venv/bin/railcc"), "run", args.spec, "-o", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    netns = first_shard_netns()
    time.sleep(max(0.0, args.delay - 1))
    rows = sample(netns, args.ports, args.seconds)
    verdict = [line for line in run.communicate()[0].splitlines() if "trusted" in line.lower()]
    queued = sorted(tokens * 64e-9 * rate / (mtu + 14) if rate else 0.0
                    for _, backlog, tokens, rate, mtu in rows if backlog > 0)
    print(f"{len(rows)} samples of {len({r[0] for r in rows})} ports, {len(queued)} with a frame queued")
    if 0 < len(queued) < 100:
        print("(fewer than 100 queued samples: too few to judge; a frame that arrives after an "
              "idle spell also reads above -1 frame)")
    if queued:
        def at(f: float) -> float:
            return queued[min(len(queued) - 1, int(f * len(queued)))]
        print("tokens at the last dequeue, in frames, over the queued samples: "
              f"p10 {at(0.1):.2f}  p50 {at(0.5):.2f}  p90 {at(0.9):.2f}  p99 {at(0.99):.2f}  "
              f"max {queued[-1]:.2f}")
        print(f"late by more than 0.1 frame: {sum(1 for x in queued if x > -0.9) / len(queued):.1%}")
    print("\n".join(verdict) or "no verdict line")
    print(f"run folder: {out}")


if __name__ == "__main__":
    main()
