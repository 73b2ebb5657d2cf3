"""`railcc spec schema`: the JSON Schema of experiment spec files, for editors and checkers."""

from __future__ import annotations

import json

import typer

spec_app = typer.Typer(no_args_is_help=True, help="Experiment spec files: their JSON Schema.")


@spec_app.command("schema")
def schema() -> None:
    """Print the JSON Schema that every spec file (TOML read as JSON) must satisfy."""
    from experiments.workload.spec import json_schema
    print(json.dumps(json_schema(), indent=1))
