"""The parameters of a rail-optimized Clos fabric, validated strictly.

A `FabricSpec` is what a user writes (a preset, a TOML table, a JSON file);
`topologies.build` turns it into the wired graph. `FabricModel`, a frozen pydantic
model, validates a mapping into one: unknown keys and wrong types are rejected and
the field is named in a one-line message, e.g. ``rails: must be 1..8, got 0``.

The strict-table vocabulary here (`Table`, `Range`, `OneOf`, `fault`, `error_line`)
is shared with the experiment spec (`experiments.workload.spec`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError, core_schema

#: Characters the run prefix (see fabric) takes in front of every switch-side
#: interface name; Linux allows 15 in all.
RUN_PREFIX_CHARS = 6
IFNAME_MAX = 15


class TopologyError(ValueError):
    """An invalid fabric description; the message names the field."""


#: What a full egress queue does: drop ("none") or pause its feeders ("pfc").
FLOW_CONTROLS = ("none", "pfc")


@dataclass(frozen=True)
class FabricSpec:
    """What a multi-rail Clos fabric is made of (all rates in Mb/s)."""

    name: str
    rails: int = 4
    servers_per_pod: int = 4
    pods: int = 2
    tiers: int = 2
    spines: int = 4
    #: 3-tier only: pods that share a block of leaves.
    pods_per_block: int = 1
    #: 3-tier only: leaves in each block; leaf i of every block connects to
    #: spine plane i (spines / leaves_per_block spines).
    leaves_per_block: int = 0
    #: Parallel links between each ToR and each spine (2-tier) or leaf (3-tier).
    tor_uplink_links: int = 1
    #: 3-tier only: parallel links between each leaf and each spine of its plane.
    leaf_uplink_links: int = 1
    nic_mbps: float = 10.0
    #: Rate of switch-to-switch links; None means the NIC rate (one speed
    #: everywhere, as real AI fabrics run).
    uplink_mbps: float | None = None
    buffer_bytes: int = 90_000
    mtu: int = 9000
    #: "none": a full egress buffer drops; "pfc": priority flow control pauses the
    #: links feeding it instead (fabric.net.pfc).
    flow_control: str = "none"
    description: str = ""

    @property
    def fabric_mbps(self) -> float:
        """Rate of every switch-to-switch link."""
        return self.nic_mbps if self.uplink_mbps is None else self.uplink_mbps

    @property
    def servers(self) -> int:
        """Number of servers in the fabric."""
        return self.servers_per_pod * self.pods

    @property
    def blocks(self) -> int:
        """Number of leaf blocks (3-tier); 0 for 2-tier fabrics."""
        return self.pods // self.pods_per_block if self.tiers == 3 else 0

    def replace(self, **changes: Any) -> "FabricSpec":
        """A copy with some fields changed, validated again."""
        return from_dict({**dataclasses.asdict(self), **changes})


# --- the strict-table vocabulary -------------------------------------------------------

def fault(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error whose one-line message is ``message``, at the sub-path ``at``.

    ``at`` names the offending key below the failing model when the check is not a
    field's own (an unknown key, a check across fields); `error_line` appends it.
    """
    return PydanticCustomError("spec", "{message}", {"message": message, "at": at})


def _shown(value: Any) -> Any:
    """A number as a message shows it: whole floats without the ``.0``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class Range:
    """Field metadata: a number in ``lo..hi`` (``hi`` None: ``>= lo``; ``exclusive``: ``> lo``).

    Checked with this project's messages (``must be 1..8, got 0``) and shown as
    ``minimum``/``maximum`` in the JSON Schema.
    """

    lo: float
    hi: float | None = None
    exclusive: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """The type's own schema, then this range check."""
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        """The type's JSON Schema plus the bounds."""
        result = handler(schema)
        result["exclusiveMinimum" if self.exclusive else "minimum"] = self.lo
        if self.hi is not None:
            result["maximum"] = self.hi
        return result

    def check(self, value: float) -> float:
        """``value`` when in range; a `fault` saying the range otherwise."""
        if self.exclusive and value <= self.lo:
            raise fault(f"must be > {self.lo}, got {_shown(value)}")
        if self.hi is not None and not self.lo <= value <= self.hi:
            raise fault(f"must be {self.lo}..{self.hi}, got {_shown(value)}")
        if value < self.lo:
            raise fault(f"must be >= {self.lo}, got {_shown(value)}")
        return value


@dataclass(frozen=True)
class OneOf:
    """Field metadata: a string among ``options``; an ``enum`` in the JSON Schema."""

    options: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """The type's own schema, then this membership check."""
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        """The type's JSON Schema plus the options."""
        return {**handler(schema), "enum": list(self.options)}

    def check(self, value: str) -> str:
        """``value`` when it is an option; a `fault` listing the options otherwise."""
        if value not in self.options:
            raise fault(f"must be one of {', '.join(self.options)}, got {value!r}")
        return value


class Table(BaseModel):
    """A TOML table validated strictly: frozen, no unknown keys, no type coercion."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    #: Messages for missing required keys that say more than ``required``.
    required_messages: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """Unknown keys first, then missing ones, each reported with the key's path."""
        if not isinstance(data, Mapping):
            return data  # pydantic reports "must be a table"
        unknown = sorted(set(data) - set(cls.model_fields), key=str)
        if unknown:
            raise fault(f"unknown key (known: {', '.join(cls.model_fields)})", unknown[0])
        for key, field in cls.model_fields.items():
            if field.is_required() and key not in data:
                raise fault(cls.required_messages.get(key, "required"), key)
        return data


_KINDS = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
          "bool_type": "true or false", "list_type": "a list", "model_type": "a table",
          "dict_type": "a table", "model_attributes_type": "a table"}


def error_line(error: ValidationError, where: str = "", root: str = "") -> str:
    """The first error of ``error`` in one line: the field path (after ``where``), then why.

    ``root`` names the whole input when the error is about it (``topology: must be
    a table, got 3``).
    """
    first = error.errors()[0]
    ours = first["type"] == "spec"  # raised by `fault`
    context = first.get("ctx") or {}
    path = where
    for part in (*first["loc"], *(context["at"] if ours else ())):
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    if ours:
        why = context["message"]
    elif first["type"] == "missing":
        why = "required"
    elif first["type"] in _KINDS:
        why = f"must be {_KINDS[first['type']]}, got {first['input']!r}"
    else:
        why = f"{first['msg'][:1].lower()}{first['msg'][1:]}, got {first['input']!r}"
    return f"{path or root or 'input'}: {why}"


# --- the fabric model -------------------------------------------------------------------

class FabricModel(Table):
    """The keys of a fabric as a user writes them, validated; `to_spec` gives the FabricSpec."""

    name: Annotated[str, Field(json_schema_extra={"pattern": r"^[\w-]+$", "maxLength": 40})]
    rails: Annotated[int, Range(1, 8)] = 4
    servers_per_pod: Annotated[int, Range(1, 250)] = 4
    pods: Annotated[int, Range(1, 250)] = 2
    tiers: Annotated[int, Field(json_schema_extra={"enum": [2, 3]})] = 2
    spines: Annotated[int, Range(1, 999)] = 4
    pods_per_block: int = 1
    leaves_per_block: int = 0
    tor_uplink_links: Annotated[int, Range(1, 64)] = 1
    leaf_uplink_links: Annotated[int, Range(1, 64)] = 1
    # Rates are checked across fields (uplink_mbps None means the NIC rate).
    nic_mbps: Annotated[float, Field(json_schema_extra={"exclusiveMinimum": 0})] = 10.0
    uplink_mbps: Annotated[float | None, Field(json_schema_extra={"exclusiveMinimum": 0})] = None
    buffer_bytes: int = 90_000
    mtu: Annotated[int, Range(576, 9000)] = 9000
    flow_control: Annotated[str, Field(json_schema_extra={"enum": list(FLOW_CONTROLS)})] = "none"
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not (name and name.replace("-", "").replace("_", "").isalnum()):
            raise fault(f"must be letters, digits, '-' or '_', got {name!r}")
        if len(name) > 40:
            raise fault(f"must be at most 40 characters, got {len(name)}")
        return name

    @field_validator("flow_control")
    @classmethod
    def _flow_control(cls, value: str) -> str:
        if value not in FLOW_CONTROLS:
            raise fault(f"must be one of {', '.join(FLOW_CONTROLS)}, got {value!r}")
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: int) -> int:
        if tiers not in (2, 3):
            raise fault(f"must be 2 or 3, got {tiers}")
        return tiers

    @model_validator(mode="after")
    def _across_fields(self) -> "FabricModel":
        """Rates, the buffer against the MTU, and the 3-tier block layout."""
        def require(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise fault(message, key)

        require(self.nic_mbps > 0, "nic_mbps", f"must be > 0, got {self.nic_mbps}")
        require(self.uplink_mbps is None or self.uplink_mbps > 0, "uplink_mbps",
                f"must be > 0, got {self.uplink_mbps}")
        require(self.buffer_bytes >= self.mtu + 100, "buffer_bytes",
                f"must hold at least one frame ({self.mtu + 100} bytes), got {self.buffer_bytes}")
        if self.tiers == 3:
            require(self.pods_per_block >= 1 and self.pods % self.pods_per_block == 0,
                    "pods_per_block", f"must divide pods ({self.pods}), got {self.pods_per_block}")
            require(self.leaves_per_block >= 1, "leaves_per_block",
                    f"must be >= 1 for a 3-tier fabric, got {self.leaves_per_block}")
            require(self.spines % self.leaves_per_block == 0, "spines",
                    f"must be a multiple of leaves_per_block ({self.leaves_per_block}), "
                    f"got {self.spines}")
        else:
            require(self.leaves_per_block == 0, "leaves_per_block",
                    f"only for tiers = 3, got {self.leaves_per_block}")
            require(self.pods_per_block == 1, "pods_per_block",
                    f"only for tiers = 3, got {self.pods_per_block}")
        return self

    def to_spec(self) -> FabricSpec:
        """The validated FabricSpec."""
        return FabricSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(FabricSpec)})


def from_dict(data: Mapping[str, Any], where: str = "") -> FabricSpec:
    """Validate a mapping into a FabricSpec or raise TopologyError naming the field."""
    return validate(FabricModel, data, where).to_spec()


def validate(model: type[Table], data: Any, where: str = "",
             error: type[Exception] = TopologyError, root: str = "topology") -> Any:
    """``model`` validated from ``data``, or ``error`` with the one-line message of the fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(error_line(exc, where, root)) from None
