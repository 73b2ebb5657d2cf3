"""Entry point of the `railcc` console script: registers every command group explicitly."""

from __future__ import annotations

import logging
import signal
import sys

from experiments.cli import ab, live, run, spec, topo
from experiments.cli.app import UserError, app, err_console
from experiments.workload.spec import SpecError
from fabric.net.sh import FabricError
from topologies import TopologyError

app.add_typer(topo.topo_app, name="topo")
app.add_typer(spec.spec_app, name="spec")
for module in (run, ab, live):
    module.commands.register(app)


def _sigterm_to_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Entry point of the `railcc` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    try:
        # Not standalone, the CLI library returns an exit code instead of exiting (130
        # after Ctrl-C, which it turns into an abort): pass it on, saying why.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                err_console.print("railcc: interrupted")
            sys.exit(code)
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
