"""The ONE trusted verdict: was the emulator fast enough for a run's numbers to mean anything?

Pure: it reads only the run folder's files (docs/run-folder.md), so the runner,
`railcc report` and a laptop without root judge a run alike, and a run can be
re-judged after the rules change. A run is *trusted* only when

- the machine was not CPU-bound (fidelity.json ``cpu_busy``): total CPU busy
  stayed under `CPU_BUSY_LIMIT` in all but a few per-second samples;
- the datapath kept up: ovs-vswitchd's forwarding thread stayed under
  `OVS_BUSY_LIMIT` of a core (``ovs_busy``), and it was not late. A frame that
  reaches a port waits for the rest of the main loop's turn it arrives in and
  part of the next (fabric/measure/turns.py, timed by pollgate), and a turn's
  length is not its CPU share: each turn polls every port, so on a 400-port
  fabric the thread is busy with ~1-ms turns at light load, while a thread at
  half a core can stall for 20 ms (control-plane work, a flow-table dump,
  preemption). So in all but a few seconds, turns longer than `TURN_LIMIT_FRAMES`
  frame times at the fabric's fastest link may take at most 1 % of the second
  (``ovs_turn_ms_by_instance``, per instance): 99 % of frames then wait about a
  frame time or less per hop (a real switch's pipeline is a few 9 kB frame times
  at 400 Gb/s);
- every link ran at its configured rate when it had work (ports.csv): over
  each stretch of at least half a second in which a switch egress queue stayed
  backlogged, it sent at least (1 - `RATE_TOLERANCE`) x its capacity, less one
  frame (an htb queue sends whole frames: at a stretch's end the next one may
  have most of its tokens and not yet be sent; at 2.5 Mb/s half a second is 17
  frames, and one is 6 %);
- the OVS send buffer never nearly filled, and telemetry kept its rate;
- no packet queued longer than the modelled queues allow (delays.csv p99);
- the NIC agents did not fall behind their line rate (counters.json
  ``late_bytes``), and the emulator's own latency did not cap them: a NIC's
  go-back-N window (fidelity.json ``nic_window_packets``) must cover at least
  the fastest one-way delay seen at line rate, or every NIC is window-bound by
  the emulator however idle the fabric (e.g. 100 Gb/s NICs: a 32-frame window
  is 23 us of line rate, a hop through the emulator ~100 us);
- packets are conserved: NIC-to-NIC packets sent = received + every counted
  drop (counters.json);
- the run was not forced past the capacity check (fidelity.json
  ``forced_over_capacity``, experiments.capacity.cache).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from fabric.net.pfc.policy import WATCHDOG_S as PFC_WATCHDOG_S
from topologies.export import load_json
from topologies.spec import FabricSpec

#: Which rules judge a run: bump it when a rule changes what is trusted (figures measured
#: under other rules, e.g. cached trusted capacities, are then not reused). 2: the turns.
RULES = 2
CPU_BUSY_LIMIT = 0.95
OVS_BUSY_LIMIT = 0.97
#: Longest turn allowed per second (turns longer take at most 1 % of it), in frame times.
TURN_LIMIT_FRAMES = 1.0
RATE_TOLERANCE = 0.05
#: Fraction of 1-s samples allowed over the limits (start-up blips).
BUSY_SAMPLE_ALLOWANCE = 0.10
#: Backlogged stretches shorter than this are not judged (one jumbo frame is ~7 % of 0.1 s).
MIN_STRETCH_S = 0.5
#: Queued bytes (all switch queues at once) allowed, as a share of OVS's socket send buffer.
SEND_BUFFER_LIMIT = 0.8
#: Telemetry must reach this share of its configured rate.
TELEMETRY_MIN_FRACTION = 0.8
#: Processing allowance on top of the modelled queues (Python NICs, OVS hops).
DELAY_SLACK_MS = 20.0
#: Share of line-rate credit the NICs may lose to late wake-ups before a run is untrusted.
NIC_LATENESS_LIMIT = 0.05
#: Imbalance tolerated by the conservation check, as a share of packets sent. The agents'
#: counters are exact, but switch-queue drops are read from qdisc counters at telemetry
#: sample times; under heavy drops the two disagree by a few packets per ten thousand
#: (measured: up to 0.18 %). A datapath that cannot keep up loses whole percents.
CONSERVATION_SLACK = 0.005


@dataclass(frozen=True)
class PortInterval:
    """One telemetry interval of one switch egress queue."""

    port: str
    seconds: float
    sent_bytes: int
    capacity_mbps: float
    backlogged: bool
    #: Of ``seconds``, how long PFC held the queue paused (it may not send then).
    paused_s: float = 0.0


@dataclass(frozen=True)
class Conservation:
    """Outcome of a packet-conservation check."""

    ok: bool
    unaccounted: int
    verdict: str


@dataclass(frozen=True)
class Verdict:
    """Trusted or not, every reason, and the figures each check looked at."""

    trusted: bool
    reasons: list[str]
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as summary.json holds it."""
        return {"trusted": self.trusted, "reasons": list(self.reasons), "checks": self.checks}


def _backlogged_stretches(intervals: list[PortInterval]) -> list[tuple[str, float, int, float]]:
    """(port, seconds, bytes, capacity) of each run of consecutive backlogged intervals (the
    seconds a PFC pause held the queue are not sending seconds)."""
    stretches = []
    current: list[PortInterval] = []
    for interval in intervals + [PortInterval("", 0.0, 0, 1.0, False)]:
        if interval.backlogged and (not current or current[-1].port == interval.port):
            current.append(interval)
            continue
        if current:
            stretches.append((current[0].port, sum(i.seconds - i.paused_s for i in current),
                              sum(i.sent_bytes for i in current), current[0].capacity_mbps))
        current = [interval] if interval.backlogged else []
    return stretches


def rate_shortfalls(intervals: list[PortInterval], frame_bytes: int = 0,
                    min_seconds: float = MIN_STRETCH_S) -> list[str]:
    """Ports that stayed backlogged for ``min_seconds`` or more yet sent under
    (1 - RATE_TOLERANCE) x capacity less one frame of ``frame_bytes`` (intervals in
    time order per port; see the module docstring)."""
    worst: dict[str, float] = {}
    for port, seconds, sent, capacity in _backlogged_stretches(intervals):
        if seconds < min_seconds:
            continue
        if capacity <= 0:
            continue  # a link a fault took down
        due = capacity * 1e6 / 8 * seconds
        if sent + frame_bytes < (1 - RATE_TOLERANCE) * due:
            worst[port] = min(sent / due, worst.get(port, 1.0))
    return [f"{port} sent {100 * ratio:.0f} % of its rate while backlogged"
            for port, ratio in sorted(worst.items(), key=lambda item: item[1])]


def port_intervals(rows: Iterable[Mapping[str, Any]]) -> list[PortInterval]:
    """ports.csv rows -> intervals per egress queue ``node:port``, in time order per queue."""
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault(f"{row['node']}:{row['port']}", []).append(row)
    intervals = []
    for port, samples in sorted(series.items()):
        samples.sort(key=lambda r: float(r["time_s"]))
        for first, second in zip(samples, samples[1:]):
            intervals.append(PortInterval(
                port, float(second["time_s"]) - float(first["time_s"]),
                int(second["sent_bytes"]) - int(first["sent_bytes"]),
                float(first["capacity_mbps"]),
                int(first["backlog_bytes"]) > 0 and int(second["backlog_bytes"]) > 0,
                float(second.get("paused_s") or 0) - float(first.get("paused_s") or 0)))
    return intervals


def cpu_reasons(machine_busy: list[float], ovs_busy: list[float],
                turn_ms: Mapping[str, list[float]] | None = None,
                frame_ms: float | None = None) -> list[str]:
    """Why the CPU samples make a run untrusted ([] when they do not): the machine's busy
    share per second, the busiest ovs-vswitchd's share of a core per second, and (when
    pollgate timed them) each instance's turns per second against ``frame_ms``."""
    reasons = []
    allowance = max(1, int(BUSY_SAMPLE_ALLOWANCE * max(len(machine_busy), 1)))
    hot = [b for b in machine_busy if b > CPU_BUSY_LIMIT]
    if len(hot) > allowance:
        reasons.append(f"CPU-bound: machine over {CPU_BUSY_LIMIT:.0%} busy in {len(hot)} of "
                       f"{len(machine_busy)} seconds (max {max(hot):.0%})")
    hot_ovs = [b for b in ovs_busy if b > OVS_BUSY_LIMIT]
    if len(hot_ovs) > allowance:
        reasons.append(f"datapath-bound: ovs-vswitchd over {OVS_BUSY_LIMIT:.0%} of a core in "
                       f"{len(hot_ovs)} of {len(ovs_busy)} seconds (max {max(hot_ovs):.0%})")
    timed = {name: series for name, series in (turn_ms or {}).items() if series}
    if timed and frame_ms:
        reasons += late_turn_reasons(timed, frame_ms)
    return reasons


def late_turn_reasons(turn_ms: Mapping[str, list[float]], frame_ms: float) -> list[str]:
    """Instances whose turns (per second, ms: turns longer took at most 1 % of it) exceeded
    `TURN_LIMIT_FRAMES` x ``frame_ms`` in more seconds than the allowance."""
    limit, reasons = TURN_LIMIT_FRAMES * frame_ms, []
    for name, series in sorted(turn_ms.items()):
        allowance = max(1, int(BUSY_SAMPLE_ALLOWANCE * len(series)))
        late = [t for t in series if t > limit]
        if len(late) > allowance:
            reasons.append(f"datapath-late: {name} spent over 1 % of {len(late)} of "
                           f"{len(series)} seconds in turns longer than {limit:.2f} ms (a "
                           f"frame time at the fastest link; up to {max(late):.1f} ms)")
    return reasons


def frame_bytes(fabric: FabricSpec) -> int:
    """Bytes of one full frame as the queues count it (IP packet and Ethernet header)."""
    return fabric.mtu + 14


def frame_ms(fabric: FabricSpec) -> float:
    """How long one full frame takes at the fabric's fastest link, in ms."""
    return frame_bytes(fabric) * 8 / (max(fabric.nic_mbps, fabric.fabric_mbps) * 1e3)


def conservation(sent: int, delivered: int, dropped: int, in_flight: int = 0,
                 final: bool = True, slack: int = 0) -> Conservation:
    """Check sent = delivered + dropped + in flight (and in flight = 0 at the end);
    an imbalance of at most ``slack`` packets passes, and the verdict says so."""
    unaccounted = sent - delivered - dropped - in_flight
    if unaccounted and abs(unaccounted) <= slack and not (final and in_flight):
        return Conservation(True, unaccounted,
                            f"OK within slack: {sent} sent, {delivered} delivered + {dropped} "
                            f"dropped, off by {unaccounted:+d} (slack {slack})")
    if unaccounted > 0:
        return Conservation(False, unaccounted,
                            f"LOST: {unaccounted} of {sent} packets sent were neither delivered, "
                            f"dropped nor in flight (uncounted drops?)")
    if unaccounted < 0:
        return Conservation(False, unaccounted,
                            f"EXTRA: delivered + dropped + in flight exceed the {sent} packets "
                            f"sent by {-unaccounted} (counted twice?)")
    if final and in_flight:
        return Conservation(False, 0, f"NOT DRAINED: {in_flight} packets still in flight "
                                      "at the end of the run")
    return Conservation(True, 0, f"OK: {sent} sent = {delivered} delivered + {dropped} dropped"
                                 + (f" + {in_flight} in flight" if in_flight else ""))


def agent_counters(counters: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per-server NIC agent counters of counters.json (older folders keep them at top level)."""
    agents = counters.get("agents")
    return agents if isinstance(agents, dict) else {
        name: value for name, value in counters.items() if isinstance(value, dict)}


def packet_balance(counters: Mapping[str, Any]) -> dict[str, Any]:
    """Packets sent by agents = received + qdisc drops + socket drops, with a verdict."""
    agents = agent_counters(counters)
    if not agents:
        return {"ok": False, "verdict": "UNKNOWN: counters.json has no agent counters"}
    total = {key: sum(int(a.get(key, 0)) for a in agents.values())
             for key in ("data_sent", "data_received", "acks_sent", "acks_received",
                         "control_sent", "control_received", "socket_drops",
                         "sends_refused", "cnps_sent", "cnps_received")}
    # In-band control (requests, grants, CNPs) runs between NICs and the controller
    # (packet-in / packet-out), not NIC to NIC, so it is reported but not balanced.
    # DCQCN's CNPs go NIC to NIC: balanced with the data and ACKs.
    sent = total["data_sent"] + total["acks_sent"] + total["cnps_sent"]
    received = total["data_received"] + total["acks_received"] + total["cnps_received"]
    # A NIC's qdisc drop reported back to the sender (ENOBUFS, IP_RECVERR) is in the host
    # qdisc's drop count but was never counted as sent (the NIC sends it again): it is not
    # a packet lost in flight.
    dropped = (int(counters.get("qdisc_drops_switch", 0))
               + int(counters.get("datapath_drops", 0))
               + int(counters.get("qdisc_drops_host", 0)) - total["sends_refused"]
               + total["socket_drops"])
    if sent == 0 and received == 0:
        # Kernel TCP (docs/run-folder.md): the NICs count nothing, the kernel retransmits.
        return {"ok": True, "sent": 0, "received": 0, "dropped": dropped, "unaccounted": 0,
                "verdict": "not applicable: no NIC packet counters (kernel TCP transport)",
                "by_class": total}
    check = conservation(sent, received, dropped, slack=int(CONSERVATION_SLACK * sent))
    return {"ok": check.ok, "sent": sent, "received": received, "dropped": dropped,
            "unaccounted": check.unaccounted, "verdict": check.verdict, "by_class": total}


def nic_lateness(counters: Mapping[str, Any]) -> float:
    """Line-rate credit lost by NICs that woke up late with packets waiting, as a share of
    what they sent plus what they lost (0 when the agents did not report it)."""
    agents = agent_counters(counters)
    sent = sum(int(a.get("wire_bytes_sent", 0)) for a in agents.values())
    late = sum(int(a.get("late_bytes", 0)) for a in agents.values())
    return late / (sent + late) if sent + late else 0.0


def window_ms(window_packets: int, fabric: FabricSpec) -> float:
    """How long a NIC's full go-back-N window lasts at its line rate, in ms."""
    return window_packets * frame_bytes(fabric) * 8 / (fabric.nic_mbps * 1e3)


def window_bound(window_packets: int | None, fabric: FabricSpec,
                 delays_ms: list[float]) -> str | None:
    """Why the NICs could not reach line rate even on an idle fabric (None if they could):
    their window lasts less than the fastest one-way delay, a lower bound of the RTT."""
    if not window_packets or not delays_ms:
        return None
    fastest, lasts = min(delays_ms), window_ms(window_packets, fabric)
    if lasts >= fastest:
        return None
    return (f"NICs window-bound by the emulator's latency: a {window_packets}-frame window "
            f"lasts {lasts:.3f} ms at {fabric.nic_mbps:g} Mb/s, the fastest one-way delay was "
            f"{fastest:.3f} ms (lower the NIC rate, or raise [transport] window_packets)")


def max_queueing_ms(tiers: int, buffer_bytes: int, slowest_mbps: float) -> float:
    """The longest one-way delay the modelled queues allow: every egress queue on the
    longest path (NIC, then up and down the tiers) full, plus DELAY_SLACK_MS."""
    queues = 2 * tiers  # NIC, (tiers - 1) switches up, tiers switches down
    return queues * buffer_bytes * 8 / (slowest_mbps * 1e3) + DELAY_SLACK_MS


def pfc_reasons(pfc: Mapping[str, Any] | None) -> list[str]:
    """Why a run's PFC loop cannot be trusted (pfc.json; none without PFC): it failed, or
    too many of its readings came later than one period (its headroom assumes one), of
    those that followed a reading with a frame queued somewhere."""
    if not pfc:
        return []
    if pfc.get("error"):
        return [f"PFC loop failed: {pfc['error']}"]
    if pfc.get("late_fraction", 0) > pfc.get("late_fraction_limit", 0.01):
        return [f"PFC loop fell behind: {100 * pfc['late_fraction']:.1f} % of its "
                f"{pfc.get('period_ms', '?')} ms readings with frames queued came a period late "
                "or more (its headroom assumes at most one)"]
    return []


def pfc_queueing_ms(tiers: int, pfc: Mapping[str, Any], slowest_mbps: float) -> float:
    """Under PFC, the delay bound: every queue on the longest path at its largest limit
    (headroom included), each also paused up to the watchdog's time."""
    limit = max((t["limit"] for t in pfc.get("thresholds", {}).values()), default=0)
    watchdog_ms = 1000 * PFC_WATCHDOG_S
    return 2 * tiers * (limit * 8 / (slowest_mbps * 1e3) + watchdog_ms) + DELAY_SLACK_MS


def judge(measured: Mapping[str, Any] | None, ports: Iterable[Mapping[str, Any]],
          counters: Mapping[str, Any], delays_ms: list[float],
          fabric: FabricSpec, faults: list[Mapping[str, Any]] | None = None,
          pfc: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict over a run's parsed files: fidelity.json (None when missing), ports.csv rows,
    counters.json, one-way delays (ms), the fabric's spec (topology.json) and the executed
    faults (faults.jsonl: a slowed link's queue drains slower; a link taken down loses what
    its queues held and what is sent into it, which no kernel counter counts)."""
    ports = list(ports)
    if measured is None:
        return Verdict(False, ["fidelity.json is missing: fidelity was not checked"])
    reasons = cpu_reasons(list(measured.get("cpu_busy", [])), list(measured.get("ovs_busy", [])),
                          measured.get("ovs_turn_ms_by_instance"), frame_ms(fabric))
    failed = measured.get("failed")
    if failed:
        reasons.insert(0, f"the run failed in round {failed.get('round', '?')}: "
                          f"{failed.get('error', 'unknown error')}")
    if measured.get("forced_over_capacity"):
        reasons.append(f"run forced past the capacity check: {measured['forced_over_capacity']}")
    shortfalls = rate_shortfalls(port_intervals(ports), frame_bytes(fabric))
    if shortfalls:
        more = f" (and {len(shortfalls) - 3} more)" if len(shortfalls) > 3 else ""
        reasons.append("link rates off by more than 5 %: " + "; ".join(shortfalls[:3]) + more)
    send_buffer = measured.get("ovs_send_buffer_bytes")
    peak = int(measured.get("peak_total_backlog_bytes") or 0)
    if send_buffer and peak > SEND_BUFFER_LIMIT * send_buffer:
        reasons.append(f"OVS send buffer nearly exhausted: {peak} bytes queued at once, buffer "
                       f"{send_buffer} (start OVS after raising net.core.wmem_default)")
    target_hz, achieved_hz = measured.get("telemetry_target_hz"), measured.get("telemetry_hz")
    if target_hz and achieved_hz is not None and achieved_hz < TELEMETRY_MIN_FRACTION * target_hz:
        reasons.append(f"telemetry fell behind: {achieved_hz:.1f} Hz of {target_hz:g} Hz")
    slowest = min([fabric.nic_mbps, fabric.fabric_mbps]
                  + [float(r["capacity_mbps"]) for r in ports if float(r["capacity_mbps"]) > 0])
    reasons += pfc_reasons(pfc)
    bound = (pfc_queueing_ms(fabric.tiers, pfc, slowest) if pfc
             else max_queueing_ms(fabric.tiers, fabric.buffer_bytes, slowest))
    p99 = float(np.percentile(delays_ms, 99)) if delays_ms else None
    if p99 is not None and p99 > bound:
        reasons.append(f"one-way delay p99 {p99:.1f} ms exceeds the {bound:.1f} ms the modelled "
                       "queues can hold: the emulator itself (NIC agents or datapath) queued "
                       "packets")
    window = window_bound(measured.get("nic_window_packets"), fabric, delays_ms)
    if window:
        reasons.append(window)
    late = nic_lateness(counters)
    if late > NIC_LATENESS_LIMIT:
        reasons.append(f"NIC agents fell behind their line rate: {100 * late:.0f} % of their "
                       "sending credit was lost to late wake-ups (CPU-bound NICs)")
    balance = packet_balance(counters)
    downed = any(f.get("ok") and f.get("op") == "down" for f in faults or ())
    if not balance.get("ok", False) and balance.get("unaccounted", 0) > 0 and downed:
        balance = {**balance, "ok": True, "verdict": f"{balance['verdict']}: expected, "
                   "links were taken down (their queues and what was sent into them are lost "
                   "uncounted)"}
    if not balance.get("ok", False):
        # Packets that vanished unaccounted (e.g. a datapath that could not keep
        # up dropped them in its socket buffers) make every other figure suspect.
        reasons.append(f"conservation: {balance.get('verdict')}")
    checks = {"link_rate_errors": shortfalls, "delay_p99_ms": p99, "delay_bound_ms": bound,
              "turn_limit_ms": round(TURN_LIMIT_FRAMES * frame_ms(fabric), 3),
              "nic_lateness": late, "conservation": balance}
    return Verdict(not reasons, reasons, checks)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def judge_folder(run_dir: Path | str) -> Verdict:
    """Judge a run folder from its files alone (fidelity.json, ports.csv, counters.json,
    delays.csv, topology.json)."""
    path = Path(run_dir)
    measured_path, counters_path = path / "fidelity.json", path / "counters.json"
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else None
    counters = json.loads(counters_path.read_text()) if counters_path.exists() else {}
    delays = [int(row["delay_ns"]) / 1e6 for row in _rows(path / "delays.csv")]
    fabric = load_json(path / "topology.json").spec
    pfc_path = path / "pfc.json"
    pfc = json.loads(pfc_path.read_text()) if pfc_path.exists() else None
    return judge(measured, _rows(path / "ports.csv"), counters, delays, fabric,
                 read_faults(path), pfc)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file ([] when it is missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_faults(run_dir: Path | str) -> list[dict[str, Any]]:
    """The executed faults of a run folder (faults.jsonl; [] when the run had none)."""
    return read_jsonl(Path(run_dir) / "faults.jsonl")
