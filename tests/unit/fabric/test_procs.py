"""Stopping processes by PID (fabric.net.procs) on throwaway children of the test itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fabric.net.procs import cmdline, pid_alive, stop_children, stop_pids

SLEEPER = "import time; print(1, flush=True); time.sleep(60)"
#: A child that ignores SIGTERM, so only the SIGKILL after the grace period ends it.
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print(1, flush=True); time.sleep(60)")


@pytest.fixture
def spawn():
    """Start Python children that are set up once they printed a line; all killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(code: str = SLEEPER) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        started.append(proc)
        proc.stdout.readline()
        return proc

    yield start
    for proc in started:
        proc.kill()  # a no-op for the reaped ones
        proc.wait()
        proc.stdout.close()


def zombie(proc: subprocess.Popen) -> subprocess.Popen:
    """Kill a child but do not reap it: its PID stays reserved, so no other process gets it."""
    proc.kill()
    deadline = time.monotonic() + 5
    while pid_alive(proc.pid):  # not proc.poll(): that would reap it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


def test_liveness_and_command_line_by_pid(spawn):
    proc = spawn()
    assert pid_alive(proc.pid) and "time.sleep(60)" in cmdline(proc.pid)
    assert pid_alive(os.getpid())
    dead = zombie(spawn())
    assert not pid_alive(dead.pid) and cmdline(dead.pid) == ""


def test_stop_children_terminates_then_kills_what_ignores_sigterm(spawn):
    polite, stubborn = spawn(), spawn(STUBBORN)
    started = time.monotonic()
    stop_children([polite, stubborn], grace=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert polite.returncode == -15 and stubborn.returncode == -9  # SIGTERM, SIGKILL
    stop_children([polite, stubborn], grace=0.5)  # already gone: nothing to do


def test_stop_pids_counts_what_existed_and_kills_the_stubborn(spawn):
    stubborn, dead = spawn(STUBBORN), zombie(spawn())
    assert stop_pids([stubborn.pid, dead.pid], grace=0.3) == 1
    deadline = time.monotonic() + 5
    while pid_alive(stubborn.pid):
        assert time.monotonic() < deadline, "SIGTERM-ignoring child survived"
        time.sleep(0.01)
