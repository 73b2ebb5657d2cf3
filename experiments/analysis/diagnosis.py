"""Suspect links and NICs of a run, ranked from its own telemetry and message records.

Pure: reads ports.csv, topology.json, messages.csv and transfers.json. What
tells a degraded link from a congested one is the rate it drains its queue at:
a link with work queued sends at its line rate however congested it is
(collisions fill queues, they do not slow the wire), so a link that stays
backlogged yet sends well under its *configured* rate (topology.json, not what
a fault set) is slow. Per switch egress queue:

- ``backlogged_s``: time with a backlog at both ends of a telemetry interval;
- ``drain``: bytes sent in those intervals over what its configured rate would
  send in them;
- ``score`` = (1 - drain) x min(1, backlogged_s / `FULL_EVIDENCE_S`): how far
  below its rate, weighted by how long it was watched doing it.

A queue is a suspect when it was backlogged at least `MIN_BACKLOGGED_S` and
drained under `SLOW_DRAIN` of its rate. NICs are ranked after links by their
messages' throughput against the median of their job (``skew``): a NIC whose
messages run under `SLOW_NIC` of the median is a suspect too (a slow link
slows the NICs behind it, so a link suspect comes first).
"""

from __future__ import annotations

import statistics
from typing import Any

#: ``run`` below is an experiments.analysis.analysis.Run (not imported: analysis
#: imports this module).
Run = Any

#: Backlogged time needed before a queue's drain rate is judged at all.
MIN_BACKLOGGED_S = 0.3
#: Backlogged time at which the evidence is full.
FULL_EVIDENCE_S = 1.0
#: A queue draining under this share of its configured rate is slow (healthy ones
#: drain at >= 95 %: the trusted verdict checks it).
SLOW_DRAIN = 0.8
#: A NIC whose messages run under this share of its job's median throughput is slow.
SLOW_NIC = 0.6


def link_names(run: Run) -> dict[tuple[str, int], tuple[str, float]]:
    """(switch, port) -> (link name, configured Mb/s) for every switch end of a link."""
    names = {}
    for link in run.topology.links:
        for end in link.ends():
            names[(end.node, end.port)] = (run.topology.link_name(link), link.mbps)
    return names


def queue_evidence(run: Run) -> list[dict[str, Any]]:
    """Per switch egress queue: backlogged time, drain share of its configured rate, score."""
    links = link_names(run)
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in run.ports:
        series.setdefault((row["node"], int(row["port"])), []).append(row)
    found = []
    for key, rows in series.items():
        if key not in links:
            continue
        name, mbps = links[key]
        rows.sort(key=lambda r: float(r["time_s"]))
        seconds = sent = 0.0
        drops = int(rows[-1]["drops"]) - int(rows[0]["drops"])
        for first, second in zip(rows, rows[1:]):
            if int(first["backlog_bytes"]) > 0 and int(second["backlog_bytes"]) > 0:
                seconds += float(second["time_s"]) - float(first["time_s"])
                sent += int(second["sent_bytes"]) - int(first["sent_bytes"])
        drain = 8 * sent / (seconds * mbps * 1e6) if seconds else None
        score = ((1 - min(drain, 1.0)) * min(1.0, seconds / FULL_EVIDENCE_S)
                 if drain is not None and seconds >= MIN_BACKLOGGED_S else 0.0)
        found.append({"kind": "link", "name": name, "queue": f"{key[0]}:{key[1]}",
                      "toward": rows[0]["peer"], "backlogged_s": round(seconds, 3),
                      "drain": None if drain is None else round(drain, 3), "drops": drops,
                      "score": round(score, 4)})
    return sorted(found, key=lambda q: -q["score"])


def nic_evidence(run: Run) -> list[dict[str, Any]]:
    """Per source NIC: its messages' median throughput over its job's median (skew)."""
    by_id = {t["id"]: t for t in run.transfers}
    rates: dict[tuple[str, str], list[float]] = {}
    for mid, message in run.messages.items():
        transfer = by_id.get(mid)
        if transfer is None or not message.get("start_ns") or not message.get("acked_ns"):
            continue
        took = (int(message["acked_ns"]) - int(message["start_ns"])) / 1e9
        if took > 0:
            nic = f"{transfer['src']}.{transfer['src_rail']}"
            rates.setdefault((transfer["job"], nic), []).append(message["size"] / took)
    per_job: dict[str, list[float]] = {}
    medians = {key: statistics.median(values) for key, values in rates.items()}
    for (job, _), value in medians.items():
        per_job.setdefault(job, []).append(value)
    found = []
    for (job, nic), value in medians.items():
        skew = value / statistics.median(per_job[job])
        found.append({"kind": "nic", "name": nic, "job": job, "skew": round(skew, 3),
                      "score": round(max(0.0, 1 - skew), 4)})
    return sorted(found, key=lambda n: -n["score"])


def _why(entry: dict[str, Any]) -> str:
    if entry["kind"] == "link":
        return (f"queue {entry['queue']} toward {entry['toward']} stayed backlogged "
                f"{entry['backlogged_s']:.1f} s yet drained at {100 * entry['drain']:.0f} % "
                f"of the link's rate ({entry['drops']} drops): a congested link sends at "
                "full rate, a degraded one does not")
    return (f"its messages of job {entry['job']} ran at {100 * entry['skew']:.0f} % of the "
            "job's median throughput")


def diagnose(run: Run) -> dict[str, Any]:
    """Suspects (links first, then NICs), each with why, and every queue's evidence."""
    queues = queue_evidence(run)
    nics = nic_evidence(run)
    suspects, named = [], set()
    for queue in queues:  # best first: one entry per link (a link has two queues)
        if queue["drain"] is not None and queue["score"] > 0 and queue["drain"] < SLOW_DRAIN \
                and queue["name"] not in named:
            named.add(queue["name"])
            suspects.append(dict(queue))
    suspects += [dict(n) for n in nics if n["skew"] < SLOW_NIC]
    for entry in suspects:
        entry["why"] = _why(entry)
    return {"suspects": suspects,
            "verdict": (f"{len(suspects)} suspect(s); first: {suspects[0]['kind']} "
                        f"{suspects[0]['name']}" if suspects else "no suspect"),
            "queues": queues[:10], "nics": nics[:10]}
