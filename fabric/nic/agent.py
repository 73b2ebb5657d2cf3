"""The emulated RDMA NIC agent: one process per server, started inside its namespace.

    python -m fabric.nic.agent --server h1 --socket DIR/agents/h1.sock --log DIR/agents/h1.log

A single-threaded event loop (selectors) over the Unix control socket (JSON
lines, docs/run-folder.md) and one UDP socket per NIC (or, with ``transport:
"tcp"``, the TCP sockets of fabric/nic/tcp.py); between events it lets
``AgentCore.pump`` transmit what pacing allows and sleeps exactly until the
next token / timer deadline. Bad requests get ``{"ok": false, "error": ...}``;
an unexpected exception is logged with its traceback and the agent exits 1.
SIGTERM exits cleanly (0). The socket file is created 0600 and removed on exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from fabric.nic import control
from fabric.nic.compiled import CompiledCore
from fabric.nic.core import AgentCore
from fabric.nic.tcp import TcpCore
from fabric.nic.udp import UdpTransport

log = logging.getLogger("fabric.nic.agent")

RECV_BATCH = 256
MAX_REQUEST_BYTES = 64 * 1024 * 1024
CONTROL_SEND_TIMEOUT_S = 10.0


class SystemClock:
    """Monotonic ns for scheduling, wall-clock ns for timestamps."""

    mono_ns = staticmethod(time.monotonic_ns)
    wall_ns = staticmethod(time.time_ns)


class _Stop(Exception):
    """Raised by the SIGTERM / SIGINT handler to leave the loop cleanly."""


class Agent:
    """One server's agent process: control socket, UDP sockets, the core."""

    def __init__(self, server: str, socket_path: Path) -> None:
        self.server = server
        self.socket_path = socket_path
        # select(2) takes a microsecond timeout (epoll rounds up to whole ms, which would
        # cost pacing accuracy at 1-2 ms per frame); a dozen descriptors is nothing for it.
        self.selector = selectors.SelectSelector()
        self.core: AgentCore | TcpCore | None = None
        self.transport: UdpTransport | TcpCore | None = None
        self.listener: socket.socket | None = None
        self.buffers: dict[socket.socket, bytearray] = {}
        self.running = True
        self.recv_buf = bytearray(65536)
        self.recv_view = memoryview(self.recv_buf)

    # -- control socket -----------------------------------------------------------
    def listen(self) -> None:
        """Create the control socket (mode 0600, a stale file is replaced)."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        listener.listen(16)
        listener.setblocking(False)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, self._accept)

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.settimeout(CONTROL_SEND_TIMEOUT_S)
        self.buffers[conn] = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, self._read_control)

    def _close_conn(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        self.buffers.pop(conn, None)
        conn.close()

    def _read_control(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            self._close_conn(conn)
            return
        buffer = self.buffers[conn]
        buffer += chunk
        if len(buffer) > MAX_REQUEST_BYTES:
            log.warning("control request over %d bytes: connection closed", MAX_REQUEST_BYTES)
            self._close_conn(conn)
            return
        while self.running and b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            if not line.strip():
                continue
            reply = self.handle_line(line)
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError as error:
                log.warning("control reply not sent: %s", error)
                self._close_conn(conn)
                return

    def handle_line(self, line: bytes) -> dict:
        """One request line -> one reply; RequestError becomes ok: false."""
        try:
            op, obj = control.parse_request(line)
            reply = getattr(self, f"_op_{op}")(obj)
        except control.RequestError as error:
            log.info("request refused: %s", error)
            return {"ok": False, "error": str(error)}
        log.log(logging.DEBUG if op == "status" else logging.INFO, "request %s: ok", op)
        return {"ok": True, **reply}

    def _need_core(self, op: str) -> AgentCore:
        if self.core is None:
            raise control.RequestError(f"{op}: send configure first")
        return self.core

    # -- operations -----------------------------------------------------------------
    def _op_configure(self, obj: dict) -> dict:
        config = control.parse_configure(obj)
        if self.core is not None:
            raise control.RequestError("configure: already configured")
        if config.transport == "tcp":
            return self._configure_tcp(config)
        try:
            transport = UdpTransport([nic.ip for nic in config.nics])
        except OSError as error:
            raise control.RequestError(f"configure.nics: cannot open UDP sockets: {error}") \
                from None
        self.transport = transport
        core_class = CompiledCore if config.datapath == "compiled" else AgentCore
        try:
            self.core = core_class(self.server, config, transport, SystemClock())
        except RuntimeError as error:  # the compiled datapath is not built
            transport.close()
            raise control.RequestError(f"configure.datapath: {error}") from None
        if config.datapath == "python":  # the compiled engine waits on its sockets itself
            for ip, sock in transport.receivers.items():
                self.selector.register(sock, selectors.EVENT_READ, self._udp_reader(ip))
        log.info("configured: %s", config)
        return {}

    def _configure_tcp(self, config: control.AgentConfig) -> dict:
        """``transport: "tcp"``: kernel TCP between ranks (fabric/nic/tcp.py)."""
        core = TcpCore(self.server, config, self.selector, SystemClock())
        try:
            core.listen()
        except OSError as error:
            raise control.RequestError(f"configure.nics: cannot open TCP sockets: {error}") \
                from None
        self.core = self.transport = core
        log.info("configured (tcp): %s", config)
        return {}

    def _op_load(self, obj: dict) -> dict:
        core = self._need_core("load")
        sends, expects = control.parse_load(obj, set(core.nic_by_rail))
        core.load(sends, expects)
        return {"send": len(sends), "expect": len(expects)}

    def _op_start(self, obj: dict) -> dict:
        at_ns = control.parse_start(obj)
        self._need_core("start").start(at_ns)
        return {}

    def _op_status(self, obj: dict) -> dict:
        control.parse_empty(obj, "status")
        return self._need_core("status").status()

    def _op_set_rate(self, obj: dict) -> dict:
        dst_ip, mbps = control.parse_set_rate(obj)
        return {"qps": self._need_core("set_rate").set_rate(dst_ip, mbps)}

    def _op_finish(self, obj: dict) -> dict:
        control.parse_empty(obj, "finish")
        core = self._need_core("finish")
        try:
            paths = core.finish()
        except OSError as error:
            raise control.RequestError(f"finish: cannot write records: {error}") from None
        counters = core.counters()
        log.info("finished: %s", counters)
        reply = {"counters": counters, "files": [str(path) for path in paths]}
        if core.config.transport == "tcp":
            reply["transport"] = "tcp"  # counters stay 0: the kernel retransmits
        return reply

    def _op_quit(self, obj: dict) -> dict:
        control.parse_empty(obj, "quit")
        self.running = False
        return {}

    # -- data path ------------------------------------------------------------------
    def _udp_reader(self, nic_ip: str):
        """Event handler draining one NIC's receive socket (bounded batch per event)."""
        def read(sock: socket.socket) -> None:
            core, view, buf = self.core, self.recv_view, self.recv_buf
            for _ in range(RECV_BATCH):
                try:
                    size, address = sock.recvfrom_into(buf)
                except (BlockingIOError, InterruptedError):
                    return
                core.on_datagram(nic_ip, address[0], view[:size])
        return read

    def run(self) -> None:
        """The event loop: transmit what is due, sleep until the next event or deadline.

        With the compiled datapath the engine runs the loop (fabric/nic/compiled.py
        ``serve``) and hands back when a control socket is readable or the control
        plane has work; the Python loop below serves the reference datapath."""
        clock_ns = time.monotonic_ns
        while self.running:
            if isinstance(self.core, CompiledCore):
                control = [key.fd for key in self.selector.get_map().values()]
                if self.core.serve(self.transport.receivers, control):
                    for key, _mask in self.selector.select(0):
                        key.data(key.fileobj)
                continue
            deadline = self.core.pump() if self.core else None
            timeout = None if deadline is None else max(0.0, (deadline - clock_ns()) / 1e9)
            for key, _mask in self.selector.select(timeout):
                key.data(key.fileobj)

    def close(self) -> None:
        """Close every socket and remove the control socket file."""
        for conn in list(self.buffers):
            self._close_conn(conn)
        if self.listener is not None:
            self.listener.close()
        if self.transport is not None:
            self.transport.close()
        self.selector.close()
        self.socket_path.unlink(missing_ok=True)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run the agent; exit status 0 (clean) or 1 (crash)."""
    parser = argparse.ArgumentParser(prog="fabric.nic.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="server name (h1, ...)")
    parser.add_argument("--socket", required=True, type=Path, help="control socket path")
    parser.add_argument("--log", required=True, type=Path, help="log file")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=str(args.log), level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = Agent(args.server, args.socket)
    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C reaches the whole terminal's process group: the harness, which gets it too,
    # asks every agent for its records and then has it quit (SIGTERM still stops it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = 0
    try:
        agent.listen()
        log.info("agent %s (pid %d) listening on %s", args.server, os.getpid(), args.socket)
        agent.run()
        log.info("agent %s: quit", args.server)
    except _Stop as stop:
        log.info("agent %s: %s, exiting", args.server, stop)
    except Exception:
        log.exception("agent %s crashed", args.server)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        agent.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
