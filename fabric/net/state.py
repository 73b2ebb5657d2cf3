"""Per-run state files: what a run will create, written before it creates anything.

A run that is killed (even SIGKILL) leaves its state file in STATE_DIR, so
`railcc clean` knows exactly which namespaces, bridges, interfaces and
processes were that run's, and removes those and nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fabric.net.procs import pid_alive  # noqa: F401 - also imported from here

STATE_DIR = Path(os.environ.get("RAILCC_STATE_DIR", "/run/railcc"))


@dataclass
class RunState:
    """Names and PIDs belonging to one run (prefix ``rcXXX``)."""

    prefix: str
    owner_pid: int
    topology: str = ""
    netns: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    root_intfs: list[str] = field(default_factory=list)
    #: Processes started in the root namespace: {pid: marker in its command line}.
    processes: dict[str, str] = field(default_factory=dict)
    started_ovs: bool = False
    #: Directories of the run's OVS shards (databases, sockets, logs), removed at cleanup.
    rundirs: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """Where this state is kept."""
        return STATE_DIR / f"{self.prefix}.json"

    def save(self) -> None:
        """Write atomically (tmp file + rename)."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Forget this run (after its objects are gone)."""
        self.path.unlink(missing_ok=True)

    def owner_alive(self) -> bool:
        """True while the process that owns the run still exists."""
        return pid_alive(self.owner_pid)


def load_all() -> list[RunState]:
    """Every run state on this machine (unreadable files are skipped)."""
    states = []
    if not STATE_DIR.is_dir():
        return states
    for path in sorted(STATE_DIR.glob("rc*.json")):
        try:
            states.append(RunState(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue
    return states
