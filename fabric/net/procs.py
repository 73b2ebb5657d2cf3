"""Processes of a run, by PID only: liveness, command line, and terminate-wait-kill.

Never by name: callers pass PIDs a run recorded (its state file, its own
children). psutil does the work (``pid_exists``, ``Process.cmdline``,
``wait_procs``); these helpers add the run's rules: a zombie is not alive, a
gone process is not an error, and what survives SIGTERM for ``grace`` seconds
gets SIGKILL.
"""

from __future__ import annotations

import subprocess
import time
from typing import Iterable

import psutil

#: How long to wait for SIGKILLed processes to be gone (by default).
KILL_WAIT_S = 5.0


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (and is not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ("" if it is gone)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _terminate_wait_kill(procs: list[psutil.Process], grace: float,
                         kill_wait: float = KILL_WAIT_S) -> list[psutil.Process]:
    """SIGTERM every live process, wait up to ``grace`` s for all, SIGKILL the rest and wait
    up to ``kill_wait`` s for them to be gone."""
    running = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                proc.terminate()
                running.append(proc)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(running, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    # SIGKILL is not instant; a zombie counts as gone (its parent may never reap it).
    deadline = time.monotonic() + kill_wait
    while any(pid_alive(proc.pid) for proc in alive) and time.monotonic() < deadline:
        time.sleep(0.01)
    return running


def stop_pids(pids: Iterable[int], grace: float = 2.0, kill_wait: float = KILL_WAIT_S) -> int:
    """Stop recorded PIDs (not our children): SIGTERM, SIGKILL after ``grace`` s, then wait up
    to ``kill_wait`` s for them to be gone (0: do not wait); how many existed."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return len(_terminate_wait_kill(procs, grace, kill_wait))


def stop_children(procs: Iterable[subprocess.Popen], grace: float) -> None:
    """Stop child processes we started: SIGTERM, SIGKILL after ``grace`` s, then reap them.

    Popen reaps its own children (psutil's wait would reap them behind its back
    and lose their exit codes)."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
