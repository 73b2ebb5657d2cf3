"""Experiment specs: a TOML file validated strictly into a frozen `Experiment`.

Schema (full reference with examples: docs/spec.md; `json_schema()` for checkers)::

    [experiment]  name (str, required), seed (int >= 0, 0), description (str, "")
    [topology]    preset = NAME plus optional FabricSpec overrides (nic_mbps, ...),
                  or inline FabricSpec keys including name (required table)
    [controller]  algorithm (ecmp|adaptive|proactive|dcqcn|swift, reactive = dcqcn; "ecmp"),
                  stats_interval_ms (10..10000, 200)
    [[jobs]]      name ("job{i}"), collective (allreduce|allgather|reducescatter|
                  all2all|sendrecv, required), servers (count >= 2 placed by
                  `placement`, or list of server names), placement (packed|
                  scattered, "packed"; counts only), rails ("all" or list of
                  rail numbers, "all"), sizes (list of bytes: int or "4MB",
                  required), dtype (int8|uint8|int32|uint32|int64|uint64|float16|
                  bfloat16|float32|float64, "float32"), iterations (1..1000, 1),
                  pxn (bool, all2all only, true), qps_per_connection (1..64, 1),
                  microbatches (1..1000, sendrecv only, 1)
    [transport]   kind (roce|tcp, "roce"), window_packets (1..4096, 32),
                  rto_ms (0.1..10000, 200), ack_every (1..window_packets, 8)
    [telemetry]   rate_hz (1..100, 10), focus_hz (0..1000, 50; 0 = off),
                  delay_sample_every (>= 1, 1), capture (servers
                  and links to write pcaps of, [])
    [limits]      run_timeout_s (1..86400, 120), max_offered_fraction (0 < x <= 1)
    [emulator]    ovs_shards (0..64, 0 = auto: one private ovs-vswitchd),
                  ovs_allocator (tcmalloc|glibc, "tcmalloc"), ovs_pollgate (bool, true)
    [[faults]]    kind (link-down|link-up|link-flap|slow-link|switch-down|switch-up|
                  nic-down|nic-up|controller-kill|controller-restart, required), link |
                  switch | nic (the target), after ("start"|"phase:N"|"JOB:iteration:N"),
                  at ("0ms"), duration, fraction (slow-link), period and count (link-flap)
                  (experiments/workload/faults.py, docs/faults.md)
    [dcqcn]       kmin_bytes, kmax_bytes, pmax, cnp_interval_ms, g, alpha_timer_ms,
                  increase_timer_ms, fast_recovery_steps, rai_fraction, min_rate_fraction,
                  plb_rounds (fabric/nic/dcqcn.py; used when the algorithm is dcqcn)
    [swift]       hop_target_frames, ai_fraction, beta, max_mdf, min_rate_fraction,
                  ack_every, plb_rounds (fabric/nic/swift.py; used when the algorithm is swift)

Validation has two steps. The file's shape (keys, types, ranges) is the frozen
pydantic model `SpecFile`, one `Table` per TOML table; then the jobs are resolved
against the fabric (server names exist, rails exist, sizes fit the ranks) into
the frozen dataclasses `Experiment`, `Job` and `Transport` the runner uses.

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
from typing import Annotated, Any, Literal, Mapping, NamedTuple

from pydantic import (AfterValidator, BeforeValidator, Field, PlainValidator, WithJsonSchema,
                      model_validator)
from pydantic_core import PydanticCustomError

from controllers.algorithms.registry import ALGORITHMS as REGISTRY
from experiments.workload import collectives as coll
from experiments.workload.faults import Fault, FaultTable, resolve as resolve_faults
from experiments.workload.placement import POLICIES, place
from fabric.nic.control import DATAPATHS
from fabric.nic.dcqcn import DcqcnParams
from fabric.nic.swift import SwiftParams
from topologies import FabricSpec, build
from topologies.model import Topology
from topologies.presets import TopologyTable
from topologies.spec import OneOf, Range, Table, fault, validate

ALGORITHMS = tuple(REGISTRY)  # one registry: controllers.algorithms.registry
TRANSPORTS = ("roce", "tcp")
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
         "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bB]|[kKmMgG][iI]?[bB])?\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class DType(NamedTuple):
    """An element type of a job's buffers: its size, and the name nccl-tests prints for it."""

    bytes: int
    nccl_name: str


#: The element types nccl-tests offers (``-d``), in its order; keys are what a spec says.
DTYPES = {"int8": DType(1, "int8"), "uint8": DType(1, "uint8"), "int32": DType(4, "int32"),
          "uint32": DType(4, "uint32"), "int64": DType(8, "int64"), "uint64": DType(8, "uint64"),
          "float16": DType(2, "half"), "float32": DType(4, "float"),
          "float64": DType(8, "double"), "bfloat16": DType(2, "bfloat16")}
DEFAULT_DTYPE = "float32"  # nccl-tests' default


class SpecError(ValueError):
    """An invalid experiment spec; the one-line message names the field path."""


@dataclass(frozen=True)
class Job:
    """One job: a collective on resolved servers (rank order) and rails, at several sizes.

    ``dtype`` is the element type of the buffers (nccl-tests ``-d``); it does not change
    the traffic, only the ``count`` and ``type`` the analysis reports.
    """

    name: str
    collective: str
    servers: tuple[str, ...]
    placement: str
    rails: tuple[int, ...]
    sizes: tuple[int, ...]
    dtype: str = DEFAULT_DTYPE
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
    nic: str = "compiled"


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
    telemetry_focus_hz: float = 50.0
    delay_sample_every: int = 1
    run_timeout_s: float = 120.0
    max_offered_fraction: float | None = None
    ovs_shards: int = 0
    ovs_allocator: str = "tcmalloc"
    ovs_pollgate: bool = True
    dcqcn: DcqcnParams = DcqcnParams()
    swift: SwiftParams = SwiftParams()
    faults: tuple[Fault, ...] = ()
    captures: tuple[str, ...] = ()
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


# --- the file's shape: one strict table per TOML table ---------------------------------

def _name(value: str) -> str:
    if not _NAME.match(value):
        raise fault(f"must be 1..40 letters, digits, '-' or '_', got {value!r}")
    return value


def _bytes(value: Any) -> int:
    """Bytes from an int or a string like "4MB" / "256KiB"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise fault(f"must be an integer or a string like '4MB', got {value!r}")
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise fault(f"not a size (units: B, KB, MB, GB, KiB, MiB, GiB), got {value!r}")
        number = float(match.group(1)) * UNITS[(match.group(2) or "b").lower()]
        if number != int(number):
            raise fault(f"must be a whole number of bytes, got {value!r}")
        value = int(number)
    if value <= 0:
        raise fault(f"must be > 0, got {value}")
    return value


def _servers(value: Any) -> int | list[str]:
    """A count >= 2, or a list of at least 2 server names."""
    if isinstance(value, list):
        if len(value) < 2 or not all(isinstance(s, str) for s in value):
            raise fault(f"must list at least 2 server names, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise fault(f"must be an integer, got {value!r}")
    return Range(2).check(value)


def _rails(value: Any) -> str | list[int]:
    """``"all"``, or a non-empty list of rail numbers."""
    if value != "all" and not (isinstance(value, list) and value and all(
            isinstance(r, int) and not isinstance(r, bool) for r in value)):
        raise fault(f"must be \"all\" or a list of rail numbers, got {value!r}")
    return value


def _size_list(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise fault(f"must be a non-empty list of sizes, got {value!r}")
    return value


def _job_list(value: Any) -> Any:
    if not isinstance(value, list) or not value or not all(isinstance(j, Mapping) for j in value):
        raise fault("need at least one [[jobs]] table")
    return value


# Each validator gives this project's message; the JSON Schema shows the input it takes.
Name = Annotated[str, AfterValidator(_name), WithJsonSchema({"type": "string",
                                                             "pattern": _NAME.pattern})]
Size = Annotated[int, PlainValidator(_bytes, json_schema_input_type=Annotated[
    int, Field(gt=0)] | Annotated[str, Field(pattern=_SIZE.pattern)])]
Servers = Annotated[int | list[str], PlainValidator(_servers, json_schema_input_type=Annotated[
    int, Field(ge=2)] | Annotated[list[str], Field(min_length=2)])]
Rails = Annotated[str | list[int], PlainValidator(_rails, json_schema_input_type=Literal[
    "all"] | Annotated[list[int], Field(min_length=1)])]


class ExperimentTable(Table):
    """[experiment]: what the run is called and its seed."""

    name: Name
    seed: Annotated[int, Range(0)] = 0
    description: str = ""


class ControllerTable(Table):
    """[controller]: the routing algorithm and its port-stats period."""

    algorithm: Annotated[str, OneOf(ALGORITHMS)] = "ecmp"
    stats_interval_ms: Annotated[float, Range(10, 10000)] = 200.0


class JobTable(Table):
    """One [[jobs]] table as written; servers, rails and sizes are checked on the fabric later."""

    required_messages = {"collective": f"required (one of {', '.join(coll.KINDS)})",
                         "servers": "required (a count or a list of server names)"}
    name: Name | None = None
    collective: Annotated[str, OneOf(coll.KINDS)]
    servers: Servers
    placement: Annotated[str, OneOf(POLICIES)] = "packed"
    rails: Rails = "all"
    sizes: Annotated[list[Size], BeforeValidator(_size_list), Field(min_length=1)]
    dtype: Annotated[str, OneOf(tuple(DTYPES))] = DEFAULT_DTYPE
    iterations: Annotated[int, Range(1, 1000)] = 1
    pxn: bool = True
    qps_per_connection: Annotated[int, Range(1, 64)] = 1
    microbatches: Annotated[int, Range(1, 1000)] = 1

    @model_validator(mode="after")
    def _only_where_meaningful(self) -> "JobTable":
        """pxn is for all2all, microbatches for sendrecv, placement for a count of servers."""
        for key, only in (("pxn", coll.ALL2ALL), ("microbatches", coll.SENDRECV)):
            if key in self.model_fields_set and self.collective != only:
                raise fault(f"only for collective = {only}, got {self.collective}", key)
        if "placement" in self.model_fields_set and not isinstance(self.servers, int):
            raise fault("only when servers is a count", "placement")
        return self


class TransportTable(Table):
    """[transport]: the NIC transport and its go-back-N settings."""

    kind: Annotated[str, OneOf(TRANSPORTS)] = "roce"
    window_packets: Annotated[int, Range(1, 4096)] = 32
    rto_ms: Annotated[float, Range(0.1, 10000)] = 200.0
    #: ACK request period; when not given, 8 or the window if that is smaller.
    ack_every: Annotated[int, Range(1, 4096)] = 8
    #: The NIC datapath: "compiled" (C, the default) or "python" (the reference).
    nic: Annotated[str, OneOf(DATAPATHS)] = "compiled"

    @model_validator(mode="after")
    def _ack_within_window(self) -> "TransportTable":
        """An ACK request period longer than the window would never be reached."""
        if "ack_every" in self.model_fields_set and self.ack_every > self.window_packets:
            raise fault(f"must be 1..{self.window_packets}, got {self.ack_every}", "ack_every")
        return self

    def to_transport(self) -> Transport:
        """The Transport handed to the agents."""
        given = "ack_every" in self.model_fields_set
        ack = self.ack_every if given else min(8, self.window_packets)
        return Transport(kind=self.kind, window_packets=self.window_packets, rto_ms=self.rto_ms,
                         ack_every=ack, nic=self.nic)


class TelemetryTable(Table):
    """[telemetry]: port sampling rate and one-way delay sampling."""

    rate_hz: Annotated[float, Range(1, 100)] = 10.0
    #: Backlogged queues are read again at this rate between rounds (0: no focus reads).
    focus_hz: Annotated[float, Range(0, 1000)] = 50.0
    delay_sample_every: Annotated[int, Range(1)] = 1
    #: Servers (each NIC) and links to write pcaps of (fabric/measure/captures.py).
    capture: list[str] = []


class LimitsTable(Table):
    """[limits]: when to give up, and an optional cap on offered load."""

    run_timeout_s: Annotated[float, Range(1, 86400)] = 120.0
    max_offered_fraction: Annotated[float, Range(0, 1, exclusive=True)] | None = None


_DCQCN = DcqcnParams()


class DcqcnTable(Table):
    """[dcqcn]: DCQCN's parameters, used when the algorithm is dcqcn (fabric/nic/dcqcn.py)."""

    kmin_bytes: Annotated[int, Range(0, 10**9)] = _DCQCN.kmin_bytes
    kmax_bytes: Annotated[int, Range(1, 10**9)] = _DCQCN.kmax_bytes
    pmax: Annotated[float, Range(0, 1, exclusive=True)] = _DCQCN.pmax
    cnp_interval_ms: Annotated[float, Range(0.001, 10000)] = _DCQCN.cnp_interval_ms
    g: Annotated[float, Range(0, 1, exclusive=True)] = _DCQCN.g
    alpha_timer_ms: Annotated[float, Range(0.001, 10000)] = _DCQCN.alpha_timer_ms
    increase_timer_ms: Annotated[float, Range(0.001, 10000)] = _DCQCN.increase_timer_ms
    fast_recovery_steps: Annotated[int, Range(0, 1000)] = _DCQCN.fast_recovery_steps
    rai_fraction: Annotated[float, Range(0, 1, exclusive=True)] = _DCQCN.rai_fraction
    min_rate_fraction: Annotated[float, Range(0, 1, exclusive=True)] = \
        _DCQCN.min_rate_fraction
    plb_rounds: Annotated[int, Range(0, 1000)] = _DCQCN.plb_rounds

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> "DcqcnTable":
        """RED needs kmin < kmax."""
        if self.kmax_bytes <= self.kmin_bytes:
            raise fault(f"must be > kmin_bytes ({self.kmin_bytes}), got {self.kmax_bytes}",
                        "kmax_bytes")
        return self

    def to_params(self) -> DcqcnParams:
        """The NICs' DCQCN parameters."""
        return DcqcnParams(**self.model_dump())


_SWIFT = SwiftParams()


class SwiftTable(Table):
    """[swift]: Swift's parameters, used when the algorithm is swift (fabric/nic/swift.py)."""

    hop_target_frames: Annotated[float, Range(0.001, 100)] = _SWIFT.hop_target_frames
    ai_fraction: Annotated[float, Range(0, 1, exclusive=True)] = _SWIFT.ai_fraction
    beta: Annotated[float, Range(0, 1, exclusive=True)] = _SWIFT.beta
    max_mdf: Annotated[float, Range(0, 1, exclusive=True)] = _SWIFT.max_mdf
    min_rate_fraction: Annotated[float, Range(0, 1, exclusive=True)] = \
        _SWIFT.min_rate_fraction
    ack_every: Annotated[int, Range(1, 4096)] = _SWIFT.ack_every
    plb_rounds: Annotated[int, Range(0, 1000)] = _SWIFT.plb_rounds

    def to_params(self) -> SwiftParams:
        """The NICs' Swift parameters."""
        return SwiftParams(**self.model_dump())


class EmulatorTable(Table):
    """[emulator]: how the emulator itself is laid out (not part of the emulated fabric)."""

    ovs_shards: Annotated[int, Range(0, 64)] = 0
    ovs_allocator: Literal["tcmalloc", "glibc"] = "tcmalloc"
    ovs_pollgate: bool = True


class SpecFile(Table):
    """A whole spec file as written (TOML read as a dict); `json_schema()` describes it."""

    required_messages = {"experiment": "required table", "topology": "required table",
                         "jobs": "need at least one [[jobs]] table"}
    experiment: ExperimentTable
    topology: TopologyTable
    controller: ControllerTable = ControllerTable()
    jobs: Annotated[list[JobTable], BeforeValidator(_job_list), Field(min_length=1)]
    transport: TransportTable = TransportTable()
    telemetry: TelemetryTable = TelemetryTable()
    limits: LimitsTable = LimitsTable()
    emulator: EmulatorTable = EmulatorTable()
    dcqcn: DcqcnTable = DcqcnTable()
    swift: SwiftTable = SwiftTable()
    faults: list[FaultTable] = []

    @model_validator(mode="after")
    def _unique_job_names(self) -> "SpecFile":
        """Two jobs may not share a name (unnamed job i is ``job{i}``)."""
        names = self.job_names()
        for i, name in enumerate(names):
            if name in names[:i]:
                raise fault(f"job name {name!r} used twice", "jobs", i, "name")
        return self

    def job_names(self) -> list[str]:
        """Every job's name, ``job{i}`` where none is given."""
        return [job.name or f"job{i}" for i, job in enumerate(self.jobs)]


# --- reading and resolving ------------------------------------------------------------

def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file (TOML read as a dict), generated from `SpecFile`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **SpecFile.model_json_schema(), "title": "railcc experiment spec"}


def parse_size(value: Any, label: str) -> int:
    """Bytes from an int or a string like "4MB" / "256KiB"; SpecError naming ``label``."""
    try:
        return _bytes(value)
    except PydanticCustomError as exc:
        raise SpecError(f"{label}: {exc.context['message']}") from None


def read_spec(path: Path | str) -> dict[str, Any]:
    """The mapping of a TOML spec file, not validated yet; SpecError if unreadable."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}: "
                        f"{exc.object[exc.start:exc.start + 1]!r})") from None


def load_spec(path: Path | str) -> Experiment:
    """Read and validate a TOML experiment spec."""
    return from_dict(read_spec(path), str(path))


def from_dict(data: Mapping[str, Any], source: str = "") -> Experiment:
    """Validate a spec mapping (as parsed from TOML) into an Experiment."""
    spec: SpecFile = validate(SpecFile, data, error=SpecError, root="spec")
    fabric = spec.topology.to_spec()
    jobs = _jobs(spec, fabric)
    try:
        faults = resolve_faults(spec.faults, build(fabric), {j.name: j.iterations for j in jobs},
                                max(len(j.sizes) for j in jobs))
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return Experiment(
        name=spec.experiment.name, fabric=fabric, jobs=jobs, faults=faults,
        captures=_captures(spec.telemetry.capture, build(fabric)),
        seed=spec.experiment.seed, description=spec.experiment.description,
        algorithm=spec.controller.algorithm, stats_interval_ms=spec.controller.stats_interval_ms,
        transport=spec.transport.to_transport(), telemetry_rate_hz=spec.telemetry.rate_hz,
        telemetry_focus_hz=spec.telemetry.focus_hz,
        delay_sample_every=spec.telemetry.delay_sample_every,
        run_timeout_s=spec.limits.run_timeout_s,
        max_offered_fraction=spec.limits.max_offered_fraction,
        ovs_shards=spec.emulator.ovs_shards, ovs_allocator=spec.emulator.ovs_allocator,
        ovs_pollgate=spec.emulator.ovs_pollgate,
        dcqcn=spec.dcqcn.to_params(), swift=spec.swift.to_params(), source=source)


def _captures(names: list[str], topology: Topology) -> tuple[str, ...]:
    """The capture points, each a server or a link of the fabric (SpecError naming it)."""
    servers = {node.name for node in topology.servers()}
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise SpecError(f"telemetry.capture[{i}]: {name} appears twice")
        if name in servers:
            continue
        try:
            topology.find_link(name)
        except ValueError as exc:
            raise SpecError(f"telemetry.capture[{i}]: not a server, and as a link: {exc}") \
                from None
    return tuple(names)


def _jobs(spec: SpecFile, fabric: FabricSpec) -> tuple[Job, ...]:
    """Reserve the explicit server lists, then place the counted jobs in order."""
    topology = build(fabric)
    known = {node.name for node in topology.servers()}
    names = spec.job_names()
    owner: dict[str, str] = {}
    for i, job in enumerate(spec.jobs):
        for server in job.servers if isinstance(job.servers, list) else ():
            if server not in known:
                raise SpecError(f"jobs[{i}].servers: {server} is not a server of {fabric.name}")
            if server in owner:
                raise SpecError(f"jobs[{i}].servers: {server} is in both job {owner[server]!r} "
                                f"and job {names[i]!r}")
            owner[server] = names[i]
    return tuple(_job(job, i, names[i], topology, spec.experiment.seed, owner)
                 for i, job in enumerate(spec.jobs))


def _job(job: JobTable, i: int, name: str, topology: Topology, seed: int,
         owner: dict[str, str]) -> Job:
    """One job's ranks (placing a count among the servers left), rails and sizes checked."""
    where, fabric = f"jobs[{i}]", topology.spec
    if isinstance(job.servers, list):
        ranks = list(job.servers)
    else:
        try:
            ranks = place(topology, job.servers, job.placement, seed + i, exclude=set(owner))
        except ValueError as exc:
            raise SpecError(f"{where}.servers: {str(exc).split(': ', 1)[1]}") from None
        owner.update({server: name for server in ranks})
    rails = list(range(fabric.rails)) if job.rails == "all" else job.rails
    for rail in rails:
        if not 0 <= rail < fabric.rails or rails.count(rail) > 1:
            problem = "appears twice" if 0 <= rail < fabric.rails else "does not exist"
            raise SpecError(f"{where}.rails: rail {rail} {problem} "
                            f"(fabric has {fabric.rails} rails)")
    minimum = len(rails) * (1 if job.collective == coll.SENDRECV else len(ranks))
    for k, size in enumerate(job.sizes):
        if size < minimum:
            raise SpecError(f"{where}.sizes[{k}]: must be >= {minimum} bytes for {job.collective} "
                            f"on {len(ranks)} servers x {len(rails)} rails, got {size}")
    return Job(name=name, collective=job.collective, servers=tuple(ranks),
               placement=job.placement, rails=tuple(sorted(rails)), sizes=tuple(job.sizes),
               dtype=job.dtype, iterations=job.iterations, pxn=job.pxn,
               qps_per_connection=job.qps_per_connection, microbatches=job.microbatches)
