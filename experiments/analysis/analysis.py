"""Analysis of a run folder: reads only its files (docs/run-folder.md), writes summary.json.

Runs on a laptop (no root). Definitions (DESIGN.md, "Metrics"), and what is read where:
- Rows are per (job, S), S = ``collective_size`` of transfers.json (``size`` when
  absent). A message is done at ``last_ns`` of its deliveries.csv row and its
  completion time is ``last_ns - start_ns`` (start from messages.csv).
- CCT of one iteration of one job = latest ``last_ns`` - earliest ``start_ns``
  of its messages; an iteration with an undelivered message has no CCT.
  ``time_ms`` is the mean CCT; algbw = S / time, busbw = algbw x the nccl-tests
  factor of (collective, ranks); efficiency = busbw / (rails x NIC rate).
- Loss of a row = switch-queue drops (ports.csv, nodes that are switches)
  between the samples around the row's time window / data packets
  (messages.csv ``packets``) of every message started in that window: jobs that
  run at the same time share one figure, as drops cannot be told apart by job.
  Run loss = counters.json ``qdisc_drops_switch`` / data packets sent by agents.
- One-way delays (delays.csv) belong to a row when ``src_ip`` is a NIC of the
  job and ``recv_ns`` falls in the row's window.
- Utilization per egress queue ``node:port`` from cumulative ``sent_bytes``;
  uplinks are switch ports whose peer sits in a higher tier; imbalance of the
  uplinks' mean utilizations per tier (`experiments.analysis.metrics`).
- Conservation: data + acks sent by agents = received + switch and
  host qdisc drops + socket drops (so nothing is in flight at the end).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controllers.algorithms.registry import ANNOUNCING
from experiments.analysis import fluid, metrics
from experiments.analysis.diagnosis import diagnose
from experiments.analysis.recovery import recovery
from experiments.workload.spec import DEFAULT_DTYPE, DTYPES, DType
from fabric.measure import fidelity
from topologies.export import load_json
from topologies.model import Topology

SUMMARY = "summary.json"
#: Version of the run folder's layout (docs/run-folder.md), in manifest.json ``format``.
RUN_FORMAT = "railcc-run/1"
#: Older layouts this version rebuilds as they are (folders from before the version field
#: hold the same files; their fidelity.json verdict fields are ignored and re-judged).
READABLE_FORMATS = (None, RUN_FORMAT)


class RunFormatError(ValueError):
    """A run folder this railcc cannot read; the message says why in one line."""


def check_format(run_dir: Path | str) -> str | None:
    """The folder's format version, or RunFormatError when it is not a readable run folder."""
    path = Path(run_dir)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise RunFormatError(f"{path}: not a run folder (no manifest.json)")
    try:
        found = json.loads(manifest.read_text()).get("format")
    except (ValueError, AttributeError):
        raise RunFormatError(f"{manifest}: not valid JSON of a run manifest") from None
    if found not in READABLE_FORMATS:
        raise RunFormatError(f"{path}: run folder format {found!r}; this railcc reads "
                             f"{RUN_FORMAT} (and unversioned folders): rebuild it with the "
                             "railcc that wrote it")
    if not (path / "topology.json").is_file():
        raise RunFormatError(f"{path}: no topology.json: the run did not get far enough to "
                             "rebuild")
    return found
HOTTEST = 5
_TIER_RANK = {"server": 0, "tor": 1, "leaf": 2, "spine": 3}


@dataclass
class Run:
    """The parsed files of a run folder."""

    path: Path
    manifest: dict[str, Any]
    topology: Topology
    transfers: list[dict[str, Any]]
    messages: dict[int, dict[str, Any]]
    deliveries: dict[int, dict[str, Any]]
    delays: list[dict[str, Any]]
    ports: list[dict[str, Any]]
    counters: dict[str, Any]
    fidelity: dict[str, Any] | None

    def done_ns(self, message_id: int) -> int | None:
        """When message ``message_id`` was fully delivered, or None (not yet whole: a run
        that failed keeps partial deliveries)."""
        row = self.deliveries.get(message_id)
        if row is None or not row["last_ns"] or row["last_ns"] <= 0:
            return None
        sent = self.messages.get(message_id)
        if sent is not None and row["bytes"] < sent["size"]:
            return None
        return int(row["last_ns"])

    def completion_ms(self, message_id: int) -> float | None:
        """Start-to-delivered time of one message in ms, or None when not delivered."""
        done, sent = self.done_ns(message_id), self.messages.get(message_id)
        if done is None or sent is None or sent["start_ns"] is None:
            return None
        return (done - sent["start_ns"]) / 1e6


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with numeric fields converted; [] when the file is missing."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _number(text: str) -> Any:
    if text == "":
        return None  # a message never sent or never acknowledged (a run that failed)
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def _json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def load_run(run_dir: Path | str) -> Run:
    """Parse the files of a run folder (missing optional files read as empty)."""
    path = Path(run_dir)
    return Run(path, _json(path / "manifest.json", {}), load_json(path / "topology.json"),
               _json(path / "transfers.json", []),
               {int(r["id"]): r for r in read_csv(path / "messages.csv")},
               {int(r["id"]): r for r in read_csv(path / "deliveries.csv")},
               read_csv(path / "delays.csv"), read_csv(path / "ports.csv"),
               _json(path / "counters.json", {}), _json(path / "fidelity.json", None))


def _tail_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    tail = metrics.percentiles(values)
    return {"count": tail.count, "mean": tail.mean, "p50": tail.p50, "p99": tail.p99,
            "p999": tail.p999, "max": tail.max}


def port_series(run: Run) -> dict[str, list[dict[str, Any]]]:
    """ports.csv rows per egress queue ``node:port``, in time order."""
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in run.ports:
        series[f"{row['node']}:{row['port']}"].append(row)
    return {key: sorted(rows, key=lambda r: r["time_s"]) for key, rows in sorted(series.items())}


def _kind(run: Run, node: str) -> str:
    try:
        return run.topology.node(node).kind
    except KeyError:
        return "server"


def switch_drops(run: Run, start_s: float, end_s: float) -> int:
    """Switch-queue drops counted between the samples around [start_s, end_s]."""
    total = 0
    for rows in port_series(run).values():
        if _kind(run, rows[0]["node"]) == "server":
            continue
        before = [r["drops"] for r in rows if r["time_s"] <= start_s] or [rows[0]["drops"]]
        after = [r["drops"] for r in rows if r["time_s"] >= end_s] or [rows[-1]["drops"]]
        total += after[0] - before[-1]
    return total


def job_rows(run: Run) -> list[dict[str, Any]]:
    """The nccl-tests style rows, one per (job, S), in schedule order."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for entry in run.transfers:
        groups[(entry["job"], int(entry.get("collective_size", entry["size"])))].append(entry)
    ip_server = {nic.ip: nic.server for nic in run.topology.nics}
    return [_row(run, job, size, entries, ip_server) for (job, size), entries in groups.items()]


def _job_dtype(run: Run, job: str) -> DType:
    """The element type of ``job``'s buffers, from the manifest's spec (float32 before dtype)."""
    jobs = run.manifest.get("spec", {}).get("jobs", [])
    name = next((j.get("dtype", DEFAULT_DTYPE) for j in jobs if j.get("name") == job),
                DEFAULT_DTYPE)
    if name not in DTYPES:
        raise RunFormatError(f"{run.path / 'manifest.json'}: job {job!r} has unknown dtype "
                             f"{name!r} (known: {', '.join(DTYPES)})")
    return DTYPES[name]


def _row(run: Run, job: str, size: int, entries: list[dict[str, Any]],
         ip_server: dict[str, str]) -> dict[str, Any]:
    kind, dtype = entries[0]["kind"], _job_dtype(run, job)
    ranks = {e["src"] for e in entries} | {e["dst"] for e in entries}
    rails = {e["src_rail"] for e in entries} | {e["dst_rail"] for e in entries}
    by_iteration: dict[int, list[int]] = defaultdict(list)
    for e in entries:
        by_iteration[int(e["iteration"])].append(int(e["id"]))
    ccts = []
    for ids in by_iteration.values():
        done = [run.done_ns(i) for i in ids]
        if all(d is not None for d in done) and all(i in run.messages for i in ids):
            ccts.append((max(done) - min(run.messages[i]["start_ns"] for i in ids)) / 1e6)
    sent = [run.messages[e["id"]] for e in entries
            if e["id"] in run.messages and run.messages[e["id"]]["start_ns"] is not None]
    done_all = [d for d in (run.done_ns(e["id"]) for e in entries) if d is not None]
    start_ns = min((m["start_ns"] for m in sent), default=0)
    end_ns = max(done_all + [m["acked_ns"] for m in sent if m["acked_ns"] is not None],
                 default=start_ns)
    window_packets = sum(m["packets"] for m in run.messages.values()
                         if m["start_ns"] is not None and start_ns <= m["start_ns"] <= end_ns)
    drops = switch_drops(run, start_ns / 1e9, end_ns / 1e9) if sent else 0
    row: dict[str, Any] = {
        "job": job, "collective": kind, "ranks": len(ranks), "rails": len(rails), "size": size,
        "count": size // dtype.bytes, "type": dtype.nccl_name, "iterations": len(by_iteration),
        "iterations_complete": len(ccts), "cct_ms": ccts,
        "time_ms": sum(ccts) / len(ccts) if ccts else None,
        "messages": len(entries), "bytes": sum(int(e["size"]) for e in entries),
        "incomplete": len(entries) - len(done_all),
        "packets": sum(m["packets"] for m in sent),
        "retransmits": sum(m["retransmits"] for m in sent),
        "timeouts": sum(m["timeouts"] for m in sent), "naks": sum(m["naks"] for m in sent),
        "drops": drops, "loss_pct": 100 * drops / window_packets if window_packets else 0.0,
        "completion_ms": _tail_ms([c for c in (run.completion_ms(e["id"]) for e in entries)
                                   if c is not None]),
        "delay_ms": _tail_ms([d["delay_ns"] / 1e6 for d in run.delays
                              if ip_server.get(d["src_ip"]) in ranks
                              and start_ns <= d["recv_ns"] <= end_ns]),
        "window_s": [start_ns / 1e9, end_ns / 1e9]}
    row.update(algbw_GBps=None, busbw_GBps=None, algbw_Mbps=None, busbw_Mbps=None, efficiency=None)
    if ccts and row["time_ms"] > 0:
        algbw = metrics.algbw(size, row["time_ms"] / 1e3)
        busbw = metrics.busbw(size, row["time_ms"] / 1e3, kind, len(ranks))
        row.update(algbw_GBps=algbw / 1e9, busbw_GBps=busbw / 1e9, algbw_Mbps=algbw * 8 / 1e6,
                   busbw_Mbps=busbw * 8 / 1e6,
                   efficiency=metrics.efficiency(busbw, run.topology.spec.nic_mbps, len(rails)))
    return row


def utilization(run: Run) -> dict[str, Any]:
    """Per tier: mean / p99 / max utilization and imbalance; uplink imbalance per tier."""
    series = port_series(run)
    samples = [metrics.CounterSample(key, r["time_s"], r["sent_bytes"])
               for key, rows in series.items() for r in rows]
    capacity = {key: float(rows[0]["capacity_mbps"]) for key, rows in series.items()}
    util = metrics.link_utilization(samples, capacity)
    tiers = metrics.tier_summaries(util, {key: rows[0]["tier"] for key, rows in series.items()})
    uplinks: dict[str, list[float]] = defaultdict(list)
    for key, rows in series.items():
        node, peer = rows[0]["node"], rows[0]["peer"]
        if _kind(run, node) != "server" and \
                _TIER_RANK.get(_kind(run, str(peer)), 0) > _TIER_RANK[_kind(run, node)]:
            uplinks[rows[0]["tier"]].append(metrics.mean_utilization(util[key]))
    return {
        "tiers": {tier: {"links": s.links, "mean": s.mean, "p99": s.p99, "max": s.max,
                         "imbalance_max_over_mean": s.imbalance.max_over_mean,
                         "imbalance_cov": s.imbalance.cov} for tier, s in tiers.items()},
        "uplink_imbalance": {tier: {"links": len(loads), **vars(metrics.imbalance(loads))}
                             for tier, loads in sorted(uplinks.items())}}


def queues(run: Run) -> dict[str, Any]:
    """p99 / max backlog of every egress queue and the `HOTTEST` ones."""
    ports = {}
    for key, rows in port_series(run).items():
        tail = metrics.percentiles([r["backlog_bytes"] for r in rows])
        ports[key] = {"node": rows[0]["node"], "peer": rows[0]["peer"], "tier": rows[0]["tier"],
                      "p99_backlog_bytes": tail.p99, "max_backlog_bytes": tail.max,
                      "drops": rows[-1]["drops"] - rows[0]["drops"]}
    hottest = sorted(ports, key=lambda k: (-ports[k]["p99_backlog_bytes"],
                                           -ports[k]["max_backlog_bytes"], -ports[k]["drops"], k))
    return {"ports": ports, "hottest": [{"port": k, **ports[k]} for k in hottest[:HOTTEST]]}


def run_loss(run: Run) -> dict[str, Any]:
    """Run-wide loss: switch drops / data packets sent, and NIC retransmissions."""
    agents = fidelity.agent_counters(run.counters)
    sent = sum(int(a.get("data_sent", 0)) for a in agents.values()) or \
        sum(m["packets"] for m in run.messages.values())
    drops = (int(run.counters.get("qdisc_drops_switch", 0))
             + int(run.counters.get("datapath_drops", 0)))
    retransmits = sum(m["retransmits"] for m in run.messages.values())
    return {"data_packets_sent": sent, "switch_drops": drops,
            "host_drops": int(run.counters.get("qdisc_drops_host", 0)),
            "loss_pct": 100 * drops / sent if sent else 0.0, "retransmits": retransmits,
            "retransmit_pct": 100 * retransmits / sent if sent else 0.0}


def read_pfc(run_dir: Path) -> dict[str, Any] | None:
    """pfc.json of a run (None when PFC was off)."""
    path = Path(run_dir) / "pfc.json"
    return json.loads(path.read_text()) if path.exists() else None


def flow_control(kind: str, pfc: dict[str, Any] | None) -> dict[str, Any]:
    """What the fabric did with a full queue and, under PFC, its pauses: totals, the loop's
    timing and cost, and the most paused gates."""
    if not pfc:
        return {"kind": kind}
    top = sorted(pfc["gates"].items(), key=lambda item: -item[1]["paused_ms"])[:8]
    keys = ("pause_events", "paused_ms", "watchdog_resumes", "cycles", "period_ms",
            "late_fraction", "lateness_p99_ms", "cpu_s", "seconds", "feeder_reads",
            "structural_pauses")
    return {"kind": kind, **{k: pfc.get(k) for k in keys},
            "most_paused": [{"gate": g, **v} for g, v in top]}


def fluid_estimate(run: Run) -> dict[str, Any]:
    """The fluid max-min estimate of the run on its own recorded paths (experiments.analysis.fluid),
    byte-weighted like the run's headline efficiency; why not, when it cannot be made."""
    recorded = _json(run.path / "paths.json", None)
    if recorded is None:
        return {"efficiency": None, "rows": [], "reason": "no paths.json in the run folder"}
    if run.manifest.get("algorithm") in ANNOUNCING:
        return {"efficiency": None, "rows": [],
                "reason": "its flows were pinned and their paths are not recorded "
                          "(fabric/measure/paths.py)"}
    ceiling = metrics.wire_ceiling(run.topology.spec.mtu)
    capacity = fluid.capacities((run.topology.link_name(link), link.a.node, link.b.node,
                                 link.mbps * 1e6 / 8 * ceiling) for link in run.topology.links)
    done = fluid.estimate(run.transfers, recorded["flows"], capacity)
    if done is None:
        return {"efficiency": None, "rows": [],
                "reason": "a transfer's flow is missing from paths.json (TCP, or it idled out)"}
    rows = fluid.job_rows(run.transfers, done, run.topology.spec.nic_mbps)
    return {"efficiency": metrics.weighted_efficiency(rows), "rows": rows, "reason": None}


def analyze(run_dir: Path | str) -> dict[str, Any]:
    """Compute every metric of a run folder and write its summary.json."""
    return analyze_run(load_run(run_dir))


def analyze_run(run: Run) -> dict[str, Any]:
    """Compute every metric of a loaded run and write its folder's summary.json."""
    delays_ms = [d["delay_ns"] / 1e6 for d in run.delays]
    pfc = read_pfc(run.path)
    verdict = fidelity.judge(run.fidelity, run.ports, run.counters, delays_ms, run.topology.spec,
                             fidelity.read_faults(run.path), pfc)
    delay = _tail_ms(delays_ms)
    balance = verdict.checks["conservation"] if verdict.checks else \
        fidelity.packet_balance(run.counters)
    completions = [c for c in map(run.completion_ms, run.messages) if c is not None]
    summary = {
        "run": {"name": run.manifest.get("spec", {}).get("name", run.path.name),
                "algorithm": run.manifest.get("algorithm"), "seed": run.manifest.get("seed"),
                "started": run.manifest.get("started"), "topology": run.topology.name,
                "nic_mbps": run.topology.spec.nic_mbps,
                "wire_ceiling": metrics.wire_ceiling(run.topology.spec.mtu)},
        "trusted": verdict.trusted, "fidelity": verdict.to_dict(),
        "rows": job_rows(run), "loss": run_loss(run),
        "delay_ms": delay,
        "completion_ms": _tail_ms(completions),
        "utilization": utilization(run), "queues": queues(run),
        "conservation": balance,
        "faults": recovery(run.path, run.delays, run.messages, run.transfers),
        "flow_control": flow_control(run.topology.spec.flow_control, pfc),
        "fluid": fluid_estimate(run),
        "diagnosis": diagnose(run)}
    (run.path / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary
