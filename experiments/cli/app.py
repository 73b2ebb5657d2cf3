"""What every `railcc` command module shares: the app, the consoles, UserError, Commands.

Command modules never import each other's commands: each collects its own in a
``Commands`` and `experiments.cli.main` registers them on ``app`` explicitly.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="railcc: congestion-control emulation of multi-rail AI fabrics.")
# Not a terminal (CI, pipes): wide enough for the nccl-tests table.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class UserError(Exception):
    """Bad input: printed as one line, exit code 2, nothing started."""


class Commands:
    """The commands one module defines, registered on a Typer app later (no import-time side effects)."""

    def __init__(self) -> None:
        self._entries: list[tuple[Callable[..., Any], tuple, dict]] = []

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator with the arguments of ``typer.Typer.command``."""
        def remember(function: Callable[..., Any]) -> Callable[..., Any]:
            self._entries.append((function, args, kwargs))
            return function
        return remember

    def register(self, target: typer.Typer) -> None:
        """Add every remembered command to ``target``."""
        for function, args, kwargs in self._entries:
            target.command(*args, **kwargs)(function)


def clean_orphans() -> None:
    """Remove the leftovers of earlier runs whose railcc process is gone (a SIGKILL leaves
    its fabric behind), and say so; runs whose owner is alive are left alone."""
    from fabric.net.cleanup import clean_all
    report = clean_all()
    if report.runs:
        err_console.print(f"railcc: removed the leftovers of {len(report.runs)} earlier run(s) "
                          f"whose railcc process is gone ({', '.join(report.runs)}): "
                          f"{report.netns} namespaces, {report.bridges} bridges, "
                          f"{report.processes} processes", highlight=False, soft_wrap=True)
