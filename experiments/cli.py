"""The `railcc` command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from experiments.topology_arg import resolve
from topologies import PRESETS, TopologyError, build
from topologies.export import summary

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="railcc: congestion-control emulation of multi-rail AI fabrics.")
topo_app = typer.Typer(no_args_is_help=True, help="Fabric presets: list, show, draw.")
app.add_typer(topo_app, name="topo")
# Not a terminal (CI, pipes): wide enough for the nccl-tests table.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class UserError(Exception):
    """Bad input: printed as one line, exit code 2, nothing started."""


@topo_app.command("list")
def topo_list() -> None:
    """List the presets, one line each."""
    for name, spec in PRESETS.items():
        console.print(f"[bold]{name:<18}[/bold] {spec.description}", highlight=False, soft_wrap=True)


@topo_app.command("show")
def topo_show(name: str, as_json: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Counts, rails, oversubscription and links of a fabric."""
    info = summary(build(resolve(name)))
    if as_json:
        print(json.dumps(info, indent=1))
        return
    table = Table(title=f"{info['name']}: {info['description']}", show_header=False)
    for key, value in info.items():
        if key not in ("name", "description"):
            table.add_row(key, ", ".join(f"{k}={v}" for k, v in value.items())
                          if isinstance(value, dict) else str(value))
    console.print(table)


@topo_app.command("draw")
def topo_draw(name: str, output: Path = typer.Option(Path("fabric.png"), "-o", "--output")) -> None:
    """Write a PNG picture of the fabric."""
    from topologies.draw import draw
    console.print(f"wrote {draw(build(resolve(name)), output)}")


def _sigterm_to_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Entry point of the `railcc` console script."""
    from experiments import cli_ab, cli_fabric, cli_run  # noqa: F401  (register their commands)
    from experiments.spec import SpecError
    from fabric.sh import FabricError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    try:
        app(standalone_mode=False)
    except (TopologyError, SpecError, UserError) as exc:
        err_console.print(f"railcc: error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except FabricError as exc:
        err_console.print(f"railcc: fabric error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("railcc: interrupted")
        sys.exit(130)
    except Exception as exc:  # usage errors of the CLI library (click, vendored or not)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ in ("Exit", "Abort"):
            sys.exit(getattr(exc, "exit_code", 130))
        raise
