"""Start the railcc controller process (os-ken) and wait until it configured every switch."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from fabric.net.procs import stop_children
from fabric.net.sh import FabricError

#: Substring of the controller's command line; cleanup checks it before killing a PID.
MARKER = "controllers.openflow.launcher"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ControllerProcess:
    """The controller as a child process bound to 127.0.0.1."""

    def __init__(self, topology_json: Path, algorithm: str, run_dir: Path,
                 port: int | None = None, stats_interval: float = 0.2,
                 options: dict | None = None, unix_sockets: list[Path] | None = None) -> None:
        self.port = port or free_port()
        #: Switches in other namespaces reach the controller on these (their 127.0.0.1 is
        #: not ours); OVS accepts a Unix controller socket only inside its own run directory.
        self.unix_sockets = list(unix_sockets or [])
        self.ready_file = run_dir / "controller.ready"
        self.log_file = run_dir / "controller.log"
        self.stderr_file = run_dir / "controller.stderr"
        self.argv = [sys.executable, "-m", MARKER, "--topology", str(topology_json),
                     "--algo", algorithm, "--port", str(self.port),
                     "--ready-file", str(self.ready_file), "--log", str(self.log_file),
                     "--stats-interval", str(stats_interval)]
        for key, value in sorted((options or {}).items()):
            self.argv += ["--option", f"{key}={value}"]
        for path in self.unix_sockets:
            self.argv += ["--listen-unix", str(path)]
        self.proc: subprocess.Popen | None = None
        #: Killed on purpose (a fault): not an error until it is started again.
        self.killed = False
        #: A booted replacement waiting to be released (a controller-restart fault).
        self.standby: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        """The OVS controller target string of a switch in the root namespace."""
        return f"tcp:127.0.0.1:{self.port}"

    def start(self) -> int:
        """Launch the process; returns its PID."""
        self.ready_file.unlink(missing_ok=True)
        self.killed = False
        self.proc = self._spawn(self.argv, subprocess.DEVNULL)
        return self.proc.pid

    def boot_standby(self) -> None:
        """Boot a replacement process that waits for `release` before it listens: a hot
        standby, its interpreter, os-ken and algorithm loaded before it is needed."""
        self.discard_standby()
        self.standby = self._spawn(self.argv + ["--standby"], subprocess.PIPE, subprocess.PIPE)

    def wait_standby(self, timeout: float = 30.0) -> None:
        """Block until the standby has booted (it says so on its stdout); FabricError if it
        dies or does not within ``timeout`` s."""
        assert self.standby is not None and self.standby.stdout is not None
        ready, _, _ = select.select([self.standby.stdout], [], [], timeout)
        if not ready or not self.standby.stdout.readline():
            err = self.stderr_file.read_text(errors="replace").strip().splitlines()
            raise FabricError(f"controller standby did not boot in {timeout:.0f} s: "
                              f"{err[-1] if err else 'no output'} (log: {self.log_file})")

    def release(self) -> int:
        """Make the standby (or, without one, a new process) the controller; its PID."""
        if self.standby is None or self.standby.poll() is not None:
            return self.start()
        self.ready_file.unlink(missing_ok=True)
        self.proc, self.standby = self.standby, None
        self.killed = False
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        self.proc.stdout.close()
        return self.proc.pid

    def discard_standby(self) -> None:
        """Stop a standby that was never released."""
        if self.standby is not None:
            stop_children([self.standby], 1.0)
            for pipe in (self.standby.stdin, self.standby.stdout):
                if pipe is not None:
                    pipe.close()
            self.standby = None

    def _spawn(self, argv: list[str], stdin: int, stdout: int | None = None
               ) -> subprocess.Popen:
        with open(self.stderr_file, "ab") as stderr:
            return subprocess.Popen(argv, stdin=stdin, stdout=stderr if stdout is None else stdout,
                                    stderr=stderr, start_new_session=True)

    def _ready(self) -> dict:
        try:
            return json.loads(self.ready_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def configured(self) -> set[int]:
        """Datapath ids the controller has finished configuring (see controllers.openflow.shim)."""
        return set(self._ready().get("configured", []))

    def openflow_errors(self) -> int:
        """OpenFlow error messages the switches sent the controller so far."""
        return int(self._ready().get("errors", 0))

    def wait_ready(self, dpids: set[int], timeout: float = 60.0) -> None:
        """Block until every dpid is configured; FabricError if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.openflow_errors():
                raise FabricError(f"controller: switches rejected OpenFlow messages "
                                  f"(OFPErrorMsg in {self.log_file})")
            if dpids <= self.configured():
                return
            time.sleep(0.05)
        missing = len(dpids - self.configured())
        raise FabricError(f"controller: {missing} of {len(dpids)} switches not configured "
                          f"after {timeout:.0f} s (see {self.log_file})")

    def kill(self) -> None:
        """SIGKILL the controller (a fault: the switches stay in secure mode and keep
        forwarding with what they were programmed with)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.killed = True

    def check_alive(self) -> None:
        """FabricError with the controller's last words if it has exited (not if killed)."""
        if self.proc is not None and not self.killed and self.proc.poll() is not None:
            err = self.stderr_file.read_text(errors="replace").strip()
            last = err.splitlines()[-1] if err else f"exit code {self.proc.returncode}"
            raise FabricError(f"controller exited: {last} (log: {self.log_file})")

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        self.discard_standby()
        if self.proc is not None:
            stop_children([self.proc], grace)
