"""Experiment specs: a TOML file validated strictly into a frozen `Experiment`.

Schema (full reference with examples: docs/spec.md)::

    [experiment]  name (str, required), seed (int >= 0, 0), description (str, "")
    [topology]    preset = NAME plus optional FabricSpec overrides (nic_mbps, ...),
                  or inline FabricSpec keys including name (required table)
    [controller]  algorithm (ecmp|adaptive|proactive|reactive, "ecmp"),
                  stats_interval_ms (10..10000, 200)
    [[jobs]]      name ("job{i}"), collective (allreduce|allgather|reducescatter|
                  all2all|sendrecv, required), servers (count >= 2 placed by
                  `placement`, or list of server names), placement (packed|
                  scattered, "packed"; counts only), rails ("all" or list of
                  rail numbers, "all"), sizes (list of bytes: int or "4MB",
                  required), iterations (1..1000, 1), pxn (bool, all2all only,
                  true), qps_per_connection (1..64, 1), microbatches (>= 1,
                  sendrecv only, 1)
    [transport]   kind (roce|tcp, "roce"), window_packets (1..4096, 32),
                  rto_ms (> 0 .. 10000, 200), ack_every (1..window_packets, 8)
    [telemetry]   rate_hz (1..100, 10), delay_sample_every (>= 1, 1)
    [limits]      run_timeout_s (> 0 .. 86400, 120), max_offered_fraction (0 < x <= 1)

Size units: B; KB, MB, GB are powers of 1000; KiB, MiB, GiB powers of 1024
(case-insensitive; "1.5MB" is allowed when it is a whole number of bytes).
Errors are `SpecError` with a one-line message naming the field path, e.g.
``jobs[0].sizes[1]: must be > 0, got 0``. Servers given as a count are placed
after every explicit list is reserved, job by job, scattered ones with
``random.Random(seed + job index)``, so a spec always resolves to the same ranks.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from controllers.algorithms.registry import ALGORITHMS as REGISTRY
from experiments.workload import collectives as coll
from experiments.workload.placement import POLICIES, place
from topologies import FabricSpec, TopologyError, build, preset
from topologies import from_dict as fabric_from_dict
from topologies.model import Topology
from topologies.presets import PRESETS

ALGORITHMS = tuple(REGISTRY)  # one registry: controllers.algorithms.registry
TRANSPORTS = ("roce", "tcp")
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
         "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_TABLES = ("experiment", "topology", "controller", "jobs", "transport", "telemetry", "limits")


class SpecError(ValueError):
    """An invalid experiment spec; the one-line message names the field path."""


@dataclass(frozen=True)
class Job:
    """One job: a collective on resolved servers (rank order) and rails, at several sizes."""

    name: str
    collective: str
    servers: tuple[str, ...]
    placement: str
    rails: tuple[int, ...]
    sizes: tuple[int, ...]
    iterations: int = 1
    pxn: bool = True
    qps_per_connection: int = 1
    microbatches: int = 1


@dataclass(frozen=True)
class Transport:
    """NIC transport settings handed to the agents."""

    kind: str = "roce"
    window_packets: int = 32
    rto_ms: float = 200.0
    ack_every: int = 8


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: fabric, controller, jobs, transport, telemetry, limits."""

    name: str
    fabric: FabricSpec
    jobs: tuple[Job, ...]
    seed: int = 0
    description: str = ""
    algorithm: str = "ecmp"
    stats_interval_ms: float = 200.0
    transport: Transport = Transport()
    telemetry_rate_hz: float = 10.0
    delay_sample_every: int = 1
    run_timeout_s: float = 120.0
    max_offered_fraction: float | None = None
    source: str = ""

    def topology(self) -> Topology:
        """The wired fabric of this experiment."""
        return build(self.fabric)

    def to_dict(self) -> dict[str, Any]:
        """The validated spec as JSON-ready data (for manifest.json)."""
        return dataclasses.asdict(self)

    def schedule(self, job: Job, size: int) -> coll.Schedule:
        """The schedule of ``job`` at ``size`` bytes, on the job's own rail numbers."""
        ranks, count, kind = list(job.servers), len(job.rails), job.collective
        build_ring = {coll.ALLREDUCE: coll.ring_allreduce, coll.ALLGATHER: coll.ring_all_gather,
                      coll.REDUCESCATTER: coll.ring_reduce_scatter}.get(kind)
        schedule = (build_ring(ranks, size, count, job.name) if build_ring
                    else coll.all2all(ranks, size, count, job.pxn, job.name) if kind == coll.ALL2ALL
                    else coll.pipeline(ranks, size, count, job.microbatches, job.name))
        return _on_rails(schedule, job.rails)

    def workloads(self, topology: Topology | None = None) -> list[tuple[int, coll.Workload]]:
        """Phase k runs every job's k-th size at once; the int is the first job's size.

        Phases run one after another; the runner repeats each job's schedule
        ``iterations`` times within a phase. ``topology`` is accepted for
        symmetry with the runner; ranks were resolved when the spec was loaded.
        """
        phases = []
        for k in range(max(len(job.sizes) for job in self.jobs)):
            present = [job for job in self.jobs if k < len(job.sizes)]
            workload = coll.combine([self.schedule(job, job.sizes[k]) for job in present])
            phases.append((present[0].sizes[k], workload))
        return phases

    def transfer_records(self, topology: Topology) -> list[dict[str, Any]]:
        """The transfers.json entries: every phase, iteration and transfer, with int ids.

        ``size`` is the message's bytes, ``collective_size`` the job's S (what
        the analysis reports); phases run in order, iterations of a job in order.
        """
        ips = coll.nic_ips(topology)
        records: list[dict[str, Any]] = []
        rounds = [(k, it, s) for k, (_, workload) in enumerate(self.workloads())
                  for it in range(max(self._job(s.job).iterations for s in workload.jobs))
                  for s in workload.jobs if it < self._job(s.job).iterations]
        ids: dict[tuple[int, int, str], int] = {}
        for k, it, schedule in rounds:
            for t in schedule.transfers():
                ids[(k, it, t.id)] = len(records)
                records.append({
                    "id": len(records), "name": t.id, "job": t.job, "kind": schedule.kind,
                    "iteration": it, "step": t.step, "size": t.size,
                    "collective_size": schedule.size, "phase": k, "src": t.src,
                    "src_rail": t.src_rail, "dst": t.dst, "dst_rail": t.dst_rail,
                    "src_ip": ips[(t.src, t.src_rail)], "dst_ip": ips[(t.dst, t.dst_rail)],
                    "after": [ids[(k, it, d)] for d in t.depends_on]})
        return records

    def _job(self, name: str) -> Job:
        return next(job for job in self.jobs if job.name == name)


def _on_rails(schedule: coll.Schedule, rails: tuple[int, ...]) -> coll.Schedule:
    """Move a schedule built on rails 0..n-1 onto the rail numbers ``rails``."""
    if rails == tuple(range(len(rails))):
        return schedule

    def rename(tid: str) -> str:
        job_step, pair = tid.rsplit(":", 1)
        (src, src_rail), (dst, dst_rail) = (p.rsplit(".", 1) for p in pair.split(">"))
        return f"{job_step}:{src}.{rails[int(src_rail)]}>{dst}.{rails[int(dst_rail)]}"

    steps = tuple(tuple(dataclasses.replace(
        t, id=rename(t.id), src_rail=rails[t.src_rail], dst_rail=rails[t.dst_rail],
        depends_on=tuple(rename(d) for d in t.depends_on)) for t in step)
        for step in schedule.steps)
    return dataclasses.replace(schedule, steps=steps)


def parse_size(value: Any, label: str) -> int:
    """Bytes from an int or a string like "4MB" / "256KiB"; SpecError naming ``label``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpecError(f"{label}: must be an integer or a string like '4MB', got {value!r}")
    if isinstance(value, str):
        match = _SIZE.match(value)
        unit = (match.group(2) or "b").lower() if match else ""
        if not match or unit not in UNITS:
            raise SpecError(f"{label}: not a size (units: B, KB, MB, GB, KiB, MiB, GiB), "
                            f"got {value!r}")
        number = float(match.group(1)) * UNITS[unit]
        if number != int(number):
            raise SpecError(f"{label}: must be a whole number of bytes, got {value!r}")
        value = int(number)
    if value <= 0:
        raise SpecError(f"{label}: must be > 0, got {value}")
    return value


def load_spec(path: Path | str) -> Experiment:
    """Read and validate a TOML experiment spec."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, str(path))


def from_dict(data: Mapping[str, Any], source: str = "") -> Experiment:
    """Validate a spec mapping (as parsed from TOML) into an Experiment."""
    _table(data, "spec", _TABLES)
    if "experiment" not in data:
        raise SpecError("experiment: required table")
    if "topology" not in data:
        raise SpecError("topology: required table")
    head = _table(data["experiment"], "experiment", ("name", "seed", "description"))
    if "name" not in head:
        raise SpecError("experiment.name: required")
    name = _get(head, "experiment", "name", str)
    if not _NAME.match(name):
        raise SpecError(f"experiment.name: must be 1..40 letters, digits, '-' or '_', got {name!r}")
    seed = _get(head, "experiment", "seed", int, 0, lo=0)
    fabric = _fabric(data["topology"])
    control = _table(data.get("controller", {}), "controller", ("algorithm", "stats_interval_ms"))
    transport = _transport(data.get("transport", {}))
    telemetry = _table(data.get("telemetry", {}), "telemetry", ("rate_hz", "delay_sample_every"))
    limits = _table(data.get("limits", {}), "limits", ("run_timeout_s", "max_offered_fraction"))
    offered = _get(limits, "limits", "max_offered_fraction", float, None, lo=0, hi=1)
    if offered == 0:
        raise SpecError("limits.max_offered_fraction: must be > 0, got 0")
    return Experiment(
        name=name, fabric=fabric, jobs=_jobs(data.get("jobs"), fabric, seed), seed=seed,
        description=_get(head, "experiment", "description", str, ""),
        algorithm=_choice(control, "controller", "algorithm", ALGORITHMS, "ecmp"),
        stats_interval_ms=_get(control, "controller", "stats_interval_ms", float, 200.0,
                               lo=10, hi=10000),
        transport=transport,
        telemetry_rate_hz=_get(telemetry, "telemetry", "rate_hz", float, 10.0, lo=1, hi=100),
        delay_sample_every=_get(telemetry, "telemetry", "delay_sample_every", int, 1, lo=1),
        run_timeout_s=_get(limits, "limits", "run_timeout_s", float, 120.0, lo=1, hi=86400),
        max_offered_fraction=offered, source=source)


def _table(value: Any, label: str, known: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{label}: must be a table, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        path = unknown[0] if label == "spec" else f"{label}.{unknown[0]}"
        raise SpecError(f"{path}: unknown key (known: {', '.join(known)})")
    return value


def _get(table: Mapping[str, Any], where: str, key: str, kind: type, default: Any = None,
         lo: float | None = None, hi: float | None = None) -> Any:
    """``table[key]`` checked for type and range ``lo..hi``, or ``default`` when absent."""
    label = f"{where}.{key}"
    if key not in table:
        return default
    value = table[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{label}: must be a number, got {value!r}")
        value = float(value)
    elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(f"{label}: must be an integer, got {value!r}")
    elif not isinstance(value, kind):
        raise SpecError(f"{label}: must be a {'string' if kind is str else kind.__name__}, "
                        f"got {value!r}")
    shown = int(value) if kind is float and value == int(value) else value
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise SpecError(f"{label}: must be {lo}..{hi}, got {shown}")
    if lo is not None and value < lo:
        raise SpecError(f"{label}: must be >= {lo}, got {shown}")
    return value


def _choice(table: Mapping[str, Any], where: str, key: str, options: tuple[str, ...],
            default: str) -> str:
    value = table.get(key, default)
    if value not in options:
        raise SpecError(f"{where}.{key}: must be one of {', '.join(options)}, got {value!r}")
    return value


def _fabric(table: Any) -> FabricSpec:
    if not isinstance(table, Mapping):
        raise SpecError(f"topology: must be a table, got {table!r}")
    data = dict(table)
    try:
        if "preset" in data:
            name = data.pop("preset")
            if name not in PRESETS:
                raise SpecError(f"topology.preset: unknown preset {name!r} "
                                f"(known: {', '.join(PRESETS)})")
            return fabric_from_dict({**dataclasses.asdict(preset(name)), **data}, "topology")
        return fabric_from_dict(data, "topology")
    except TopologyError as exc:
        raise SpecError(str(exc).replace(" (known: ", " (known: preset, ", 1)
                        if "unknown key" in str(exc) else str(exc)) from None


def _transport(table: Any) -> Transport:
    t = _table(table, "transport", ("kind", "window_packets", "rto_ms", "ack_every"))
    window = _get(t, "transport", "window_packets", int, 32, lo=1, hi=4096)
    return Transport(kind=_choice(t, "transport", "kind", TRANSPORTS, "roce"), window_packets=window,
                     rto_ms=_get(t, "transport", "rto_ms", float, 200.0, lo=0.1, hi=10000),
                     ack_every=_get(t, "transport", "ack_every", int, min(8, window),
                                    lo=1, hi=window))


_JOB_KEYS = ("name", "collective", "servers", "placement", "rails", "sizes", "iterations",
             "pxn", "qps_per_connection", "microbatches")


def _jobs(value: Any, fabric: FabricSpec, seed: int) -> tuple[Job, ...]:
    """Validate [[jobs]], reserve explicit server lists, then place counted jobs in order."""
    if not isinstance(value, list) or not value or not all(isinstance(j, Mapping) for j in value):
        raise SpecError("jobs: need at least one [[jobs]] table")
    topology = build(fabric)
    known = [node.name for node in topology.servers()]
    owner: dict[str, str] = {}
    names: list[str] = []
    for i, table in enumerate(value):
        where = f"jobs[{i}]"
        job = _table(table, where, _JOB_KEYS)
        name = _get(job, where, "name", str, f"job{i}")
        if not _NAME.match(name):
            raise SpecError(f"{where}.name: must be 1..40 letters, digits, '-' or '_', got {name!r}")
        if name in names:
            raise SpecError(f"{where}.name: job name {name!r} used twice")
        names.append(name)
        servers = job.get("servers")
        if isinstance(servers, list):
            if len(servers) < 2 or not all(isinstance(s, str) for s in servers):
                raise SpecError(f"{where}.servers: must list at least 2 server names, got {servers!r}")
            for server in servers:
                if server not in known:
                    raise SpecError(f"{where}.servers: {server} is not a server of {fabric.name}")
                if server in owner:
                    raise SpecError(f"{where}.servers: {server} is in both job {owner[server]!r} "
                                    f"and job {name!r}")
                owner[server] = name
    return tuple(_job(table, i, names[i], fabric, topology, seed, owner)
                 for i, table in enumerate(value))


def _job(job: Mapping[str, Any], i: int, name: str, fabric: FabricSpec, topology: Topology,
         seed: int, owner: dict[str, str]) -> Job:
    where = f"jobs[{i}]"
    if "collective" not in job:
        raise SpecError(f"{where}.collective: required (one of {', '.join(coll.KINDS)})")
    kind = _choice(job, where, "collective", coll.KINDS, "")
    for key, only in (("pxn", coll.ALL2ALL), ("microbatches", coll.SENDRECV)):
        if key in job and kind != only:
            raise SpecError(f"{where}.{key}: only for collective = {only}, got {kind}")
    servers = job.get("servers")
    if "placement" in job and not isinstance(servers, int):
        raise SpecError(f"{where}.placement: only when servers is a count")
    policy = _choice(job, where, "placement", POLICIES, "packed")
    if isinstance(servers, list):
        ranks = list(servers)
    else:
        count = _get(job, where, "servers", int, None, lo=2)
        if count is None:
            raise SpecError(f"{where}.servers: required (a count or a list of server names)")
        try:
            ranks = place(topology, count, policy, seed + i, exclude=set(owner))
        except ValueError as exc:
            raise SpecError(f"{where}.servers: {str(exc).split(': ', 1)[1]}") from None
        owner.update({server: name for server in ranks})
    rails = job.get("rails", "all")
    if rails == "all":
        rails = list(range(fabric.rails))
    if not isinstance(rails, list) or not rails or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in rails):
        raise SpecError(f"{where}.rails: must be \"all\" or a list of rail numbers, got {rails!r}")
    for rail in rails:
        if not 0 <= rail < fabric.rails or rails.count(rail) > 1:
            problem = "appears twice" if 0 <= rail < fabric.rails else "does not exist"
            raise SpecError(f"{where}.rails: rail {rail} {problem} (fabric has {fabric.rails} rails)")
    sizes = job.get("sizes")
    if not isinstance(sizes, list) or not sizes:
        raise SpecError(f"{where}.sizes: must be a non-empty list of sizes, got {sizes!r}")
    minimum = len(rails) * (1 if kind == coll.SENDRECV else len(ranks))
    parsed = []
    for k, raw in enumerate(sizes):
        size = parse_size(raw, f"{where}.sizes[{k}]")
        if size < minimum:
            raise SpecError(f"{where}.sizes[{k}]: must be >= {minimum} bytes for {kind} on "
                            f"{len(ranks)} servers x {len(rails)} rails, got {size}")
        parsed.append(size)
    return Job(name=name, collective=kind, servers=tuple(ranks), placement=policy,
               rails=tuple(sorted(rails)), sizes=tuple(parsed),
               iterations=_get(job, where, "iterations", int, 1, lo=1, hi=1000),
               pxn=_get(job, where, "pxn", bool, True),
               qps_per_connection=_get(job, where, "qps_per_connection", int, 1, lo=1, hi=64),
               microbatches=_get(job, where, "microbatches", int, 1, lo=1, hi=1000))
