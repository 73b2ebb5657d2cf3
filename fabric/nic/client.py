"""Client of the NIC agent's control socket (docs/run-folder.md): one JSON line per request.

    client = AgentClient("DIR/agents/h1.sock")
    client.configure(nics=[{"rail": 0, "ip": "10.0.0.1"}], line_mbps=10.0, out_dir="DIR/agents")
    client.load(send=[...], expect=[...]); client.start(time.time_ns() + 300_000_000)
    client.status()["done"]; client.finish()["counters"]; client.quit()

A reply with ``"ok": false`` raises ``AgentError`` (a FabricError) with the
agent's message.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

from fabric.net.sh import FabricError

DEFAULT_TIMEOUT_S = 30.0


class AgentError(FabricError):
    """The agent refused a request or could not be reached."""


def wait_socket(path: str | Path, timeout: float = 10.0) -> bool:
    """Wait until a Unix socket at ``path`` accepts connections; False on timeout."""
    deadline = time.monotonic() + timeout
    path = str(path)
    while True:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(1.0)
                    probe.connect(path)
                    return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class AgentClient:
    """One connection to an agent's control socket (reconnects if it was closed)."""

    def __init__(self, socket_path: str | Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._pending = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as error:
                sock.close()
                raise AgentError(f"agent socket {self.socket_path}: {error}") from None
            self._sock, self._pending = sock, b""
        return self._sock

    def close(self) -> None:
        """Close the connection (the agent keeps running)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, op: str, **fields: object) -> dict:
        """Send one request, return its reply; AgentError if the agent refused it."""
        sock = self._connect()
        try:
            sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            while b"\n" not in self._pending:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise AgentError(f"agent {self.socket_path}: closed the connection "
                                     f"during {op}")
                self._pending += chunk
        except OSError as error:
            self.close()
            raise AgentError(f"agent {self.socket_path}: {op}: {error}") from None
        except AgentError:
            self.close()
            raise
        line, _, self._pending = self._pending.partition(b"\n")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise AgentError(f"agent {self.socket_path}: {op}: {reply.get('error', reply)}")
        return reply

    def configure(self, **config: object) -> dict:
        """Set up the NICs and transport (see docs/run-folder.md for the keys)."""
        return self.request("configure", **config)

    def load(self, send: list[dict], expect: list[dict]) -> dict:
        """Give the agent the messages it sends and receives."""
        return self.request("load", send=send, expect=expect)

    def start(self, at_ns: int | None = None) -> dict:
        """Start the loaded messages at wall-clock time ``at_ns`` (default: now)."""
        return self.request("start") if at_ns is None else self.request("start", at_ns=at_ns)

    def status(self) -> dict:
        """Progress: sent_done, send_total, received, expect_total, done, counters."""
        return self.request("status")

    def set_rate(self, dst_ip: str, mbps: float) -> dict:
        """Pace every QP toward ``dst_ip`` at ``mbps``."""
        return self.request("set_rate", dst_ip=dst_ip, mbps=mbps)

    def finish(self) -> dict:
        """Write the agent's CSV files; the reply holds ``counters`` and ``files``."""
        return self.request("finish")

    def quit(self) -> dict:
        """Ask the agent to exit."""
        try:
            return self.request("quit")
        finally:
            self.close()
