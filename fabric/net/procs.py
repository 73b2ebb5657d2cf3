"""Processes of a run, by PID only: liveness, command line, and terminate-wait-kill.

Never by name: callers pass PIDs a run recorded (its state file, its own
children). Stdlib only (/proc and signals); psutil is not installed here, and
`pid_alive` / `cmdline` / `stop_pids` are what ``psutil.pid_exists``,
``Process.cmdline`` and ``psutil.wait_procs`` would replace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

POLL_S = 0.05
T = TypeVar("T")


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (and is not a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _terminate_wait_kill(targets: Iterable[T], alive: Callable[[T], bool],
                         send: Callable[[T, int], None], grace: float) -> list[T]:
    """SIGTERM every live target, wait up to ``grace`` s for all, SIGKILL the rest."""
    running = [target for target in targets if alive(target)]
    for target in running:
        send(target, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(target) for target in running):
        time.sleep(POLL_S)
    for target in running:
        if alive(target):
            send(target, signal.SIGKILL)
    return running


def stop_pids(pids: Iterable[int], grace: float = 2.0) -> int:
    """Stop recorded PIDs (not our children): SIGTERM, SIGKILL after ``grace`` s; how many existed."""
    return len(_terminate_wait_kill(pids, pid_alive, _signal_pid, grace))


def stop_children(procs: Iterable[subprocess.Popen], grace: float) -> None:
    """Stop child processes we started: SIGTERM, SIGKILL after ``grace`` s, then reap them."""
    stopped = _terminate_wait_kill(procs, lambda proc: proc.poll() is None,
                                   lambda proc, sig: proc.send_signal(sig), grace)
    for proc in stopped:
        proc.wait()
