"""Running the system tools (ip, tc, ovs-vsctl) with clear errors."""

from __future__ import annotations

import logging
import subprocess
from typing import Mapping, Sequence

log = logging.getLogger(__name__)


class FabricError(RuntimeError):
    """Building, verifying or tearing down a live fabric failed."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
    """Run a command, return stdout; FabricError with its stderr when it fails."""
    log.debug("run: %s", " ".join(argv[:6]) + (" ..." if len(argv) > 6 else ""))
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, env=None if env is None else dict(env))
    except FileNotFoundError as exc:
        raise FabricError(f"{argv[0]}: not installed (run 'make setup')") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise FabricError(f"{argv[0]} {' '.join(argv[1:3])}: failed: "
                          f"{detail[0] if detail else 'exit ' + str(proc.returncode)}")
    return proc.stdout


def batch(tool: str, lines: Sequence[str], netns: str | None = None,
          force: bool = False) -> None:
    """Feed many ip/tc commands to one ``tool -batch -`` process (optionally in a netns)."""
    if not lines:
        return
    argv = [tool]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    run(argv + ["-batch", "-"], input="\n".join(lines) + "\n", check=True)
