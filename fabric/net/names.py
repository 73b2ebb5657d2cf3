"""Names of everything a run creates, all derived from one short run prefix.

A run prefix is ``rc`` + 3 base-36 characters (5 in all). Every object of a
run carries it, so cleanup can remove exactly one run's objects:
- namespaces: ``railcc-{prefix}-{server}``, and ``railcc-{prefix}-ovs{i}`` for
  its OVS shards
- bridges: ``{prefix}-{switch}`` (plus ``external_ids:railcc-run={prefix}``)
- switch-side interfaces: ``{prefix}-{switch}p{port}`` (<= 15 characters),
  all in interface group ``link_group(prefix)``
"""

from __future__ import annotations

import random
import re
import string

NETNS_PREFIX = "railcc-"
_ALPHABET = string.ascii_lowercase + string.digits
PREFIX_RE = re.compile(r"^rc[a-z0-9]{3}$")


def new_run_prefix(taken: set[str] | None = None, rng: random.Random | None = None) -> str:
    """A fresh run prefix not in ``taken``."""
    rng = rng or random.SystemRandom()
    taken = taken or set()
    while True:
        prefix = "rc" + "".join(rng.choice(_ALPHABET) for _ in range(3))
        if prefix not in taken:
            return prefix


def netns_name(prefix: str, server: str) -> str:
    """Network namespace of one server."""
    return f"{NETNS_PREFIX}{prefix}-{server}"


def bridge_name(prefix: str, switch: str) -> str:
    """OVS bridge of one switch."""
    return f"{prefix}-{switch}"


def switch_intf(prefix: str, intf: str) -> str:
    """Name of a switch-side interface in its shard's namespace (topology name + run prefix)."""
    return f"{prefix}-{intf}"


def link_group(prefix: str) -> int:
    """Interface group of a run's veths (one `ip link del group` removes any left in the root
    namespace by a run from before the shards)."""
    return 0x7A110000 + int(prefix[2:], 36)


def is_shard_netns(name: str) -> bool:
    """True for the namespace of a run's OVS shard (``railcc-{prefix}-ovs{i}``)."""
    return prefix_of_netns(name) is not None and re.fullmatch(r"ovs\d+", name.split("-", 2)[2]) is not None


def prefix_of_netns(name: str) -> str | None:
    """The run prefix of a railcc namespace name, or None for a foreign one."""
    if not name.startswith(NETNS_PREFIX):
        return None
    candidate = name[len(NETNS_PREFIX):].split("-", 1)[0]
    return candidate if PREFIX_RE.match(candidate) else None
