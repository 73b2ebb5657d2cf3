"""The controller process: ``python -m controllers.openflow.launcher --topology T.json --algo ecmp ...``.

Starts os-ken in-process (no osken-manager), bound to 127.0.0.1, OpenFlow
1.3, with echo requests so a hung switch is dropped. Bad input (unreadable
topology, unknown algorithm, port in use) exits 2 with one line on stderr.
SIGTERM/SIGINT log a line and exit 0. With ``--standby`` the process boots
(interpreter, os-ken, the algorithm) and then waits for a line on stdin before it
listens: a replacement controller kept warm, as a standby of an HA pair is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Sequence

LOG = logging.getLogger("controllers.openflow.launcher")

LISTEN_HOST = "127.0.0.1"
DEFAULT_PORT = 6653
#: Seconds between echo requests, and how many may go unanswered before os-ken
#: drops the switch: a hung switch is noticed within about 2.5 s (measured 2-3 s,
#: tests/emulation/test_faults.py), well inside the 4 s the field expects.
ECHO_INTERVAL_S = 0.5
ECHO_MAX_UNREPLIED = 4
#: Signals that end the controller cleanly (exit 0).
EXIT_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class LaunchError(Exception):
    """Bad launcher input; the message is one line naming what was wrong."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options of the controller process."""
    parser = argparse.ArgumentParser(prog="railcc-controller",
                                     description="railcc SDN controller (os-ken, OpenFlow 1.3)")
    parser.add_argument("--topology", required=True, type=Path, help="topology JSON file")
    parser.add_argument("--algo", default="ecmp", help="algorithm name (default ecmp)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="OpenFlow TCP port")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="JSON file rewritten as switches get configured")
    parser.add_argument("--log", type=Path, default=None, help="log file (default stderr)")
    parser.add_argument("--stats-interval", type=float, default=0.2,
                        help="port-stats polling interval in seconds (0 disables)")
    parser.add_argument("--echo-interval", type=float, default=ECHO_INTERVAL_S,
                        help="seconds between echo requests to each switch")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="algorithm option (number or string), e.g. seed=3; repeatable")
    parser.add_argument("--listen-unix", type=Path, action="append", default=[], metavar="PATH",
                        help="also accept switches on this Unix socket (switches in other "
                             "network namespaces; created 0600); repeatable")
    parser.add_argument("--standby", action="store_true",
                        help="boot, then wait for a line on stdin before listening")
    return parser.parse_args(list(argv))


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["seed=3", "headroom=0.9"]`` -> ``{"seed": 3, "headroom": 0.9}``; LaunchError if malformed."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise LaunchError(f"--option: must be KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def check_inputs(args: argparse.Namespace) -> None:
    """Fail early, in one line, on a bad topology, algorithm, interval or busy port."""
    from controllers.algorithms.registry import UnknownAlgorithm, make_algorithm
    from topologies.export import load_json
    try:
        topology = load_json(args.topology)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LaunchError(f"--topology {args.topology}: {error}") from None
    try:
        make_algorithm(args.algo, topology, **parse_options(args.option))
    except (UnknownAlgorithm, ValueError) as error:
        raise LaunchError(f"--algo {args.algo}: {error}") from None
    if args.stats_interval < 0:
        raise LaunchError(f"--stats-interval: must be >= 0, got {args.stats_interval}")
    if args.echo_interval <= 0:
        raise LaunchError(f"--echo-interval: must be > 0, got {args.echo_interval}")
    for path in args.listen_unix:
        if not path.parent.is_dir():
            raise LaunchError(f"--listen-unix {path}: directory does not exist")
    if not 1 <= args.port <= 65535:
        raise LaunchError(f"--port: must be 1..65535, got {args.port}")
    if args.standby:
        return   # the controller it stands by for holds the port until it dies
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LISTEN_HOST, args.port))
        except OSError as error:
            raise LaunchError(f"--port {args.port}: cannot listen on {LISTEN_HOST}: {error}") from None


def setup_logging(log_path: Path | None) -> None:
    """Timestamped log lines to ``log_path`` (or stderr), INFO and up."""
    handler: logging.Handler
    if log_path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: "
                                           "%(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    LOG.info("controller: %s received, exiting", signal.Signals(signum).name)
    logging.shutdown()
    # os-ken's hub threads cannot be stopped; leave without joining them.
    os._exit(0)


def run(args: argparse.Namespace) -> int:
    """Configure os-ken and the shim, then serve until a signal or the listener dies."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager  # noqa: F401 - before controller: circular import
    import os_ken.controller.controller  # noqa: F401 - registers the ofp-* options

    from controllers.openflow import shim

    cfg.CONF(args=["--ofp-listen-host", LISTEN_HOST, "--ofp-tcp-listen-port", str(args.port)],
             project="os_ken", default_config_files=[])
    cfg.CONF.set_override("echo_request_interval", args.echo_interval)
    cfg.CONF.set_override("maximum_unreplied_echo_requests", ECHO_MAX_UNREPLIED)
    shim.configure(shim.ShimConfig(topology_path=args.topology, algo=args.algo,
                                   ready_file=args.ready_file,
                                   stats_interval=args.stats_interval,
                                   options=parse_options(args.option)))
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    if args.standby:
        LOG.info("controller: standby, booted (pid %d)", os.getpid())
        os.write(1, b"booted\n")
        if not os.read(0, 64):
            LOG.info("controller: standby released without a go; exiting")
            logging.shutdown()
            os._exit(0)
    LOG.info("controller: listening on %s:%d (pid %d)", LISTEN_HOST, args.port, os.getpid())
    # os-ken's hub runs native threads and its main thread would wait in a join that a
    # signal delivered to another thread never wakes (SIGTERM then waited for SIGKILL).
    # So every thread from here on blocks the exit signals and this one waits for them.
    signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_SIGNALS)
    for path in args.listen_unix:
        serve_unix(path)
    threading.Thread(target=_serve, name="os-ken", daemon=True).start()
    _exit_on_signal(signal.sigwait(EXIT_SIGNALS), None)
    return 0


def _serve() -> None:
    """Run the os-ken apps; their end is the process's end (exit 1)."""
    from os_ken.base.app_manager import AppManager
    try:
        AppManager.run_apps(["controllers.openflow.shim"])
        LOG.error("controller: OpenFlow listener stopped; exiting")
    except Exception:  # noqa: BLE001 - log it where the harness looks
        LOG.exception("controller: os-ken failed")
    logging.shutdown()
    os._exit(1)


class _UnixStream(socket.socket):
    """An accepted Unix-socket connection that os-ken can treat as TCP (it sets TCP_NODELAY)."""

    def setsockopt(self, level: int, *args: Any) -> None:  # type: ignore[override]
        """TCP options mean nothing on a Unix socket: ignore them."""
        if level != socket.IPPROTO_TCP:
            super().setsockopt(level, *args)


def serve_unix(path: Path) -> None:
    """Accept OpenFlow switches on a Unix socket too, each served like a TCP one."""
    from os_ken.controller.controller import datapath_connection_factory
    from os_ken.lib import hub

    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(128)
    LOG.info("controller: also listening on unix:%s", path)

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            stream = _UnixStream(socket.AF_UNIX, socket.SOCK_STREAM, fileno=conn.detach())
            hub.spawn(datapath_connection_factory, stream, ("unix", str(path)))

    hub.spawn(loop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, check, log, run. Returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_inputs(args)
    except LaunchError as error:
        print(f"railcc controller: {error}", file=sys.stderr)
        return 2
    setup_logging(args.log)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
