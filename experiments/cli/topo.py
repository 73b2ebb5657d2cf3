"""`railcc topo list | show | draw`: the fabric presets and spec files, without root."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from experiments.cli.app import console
from experiments.cli.topology_arg import resolve
from topologies import PRESETS, build
from topologies.export import summary

topo_app = typer.Typer(no_args_is_help=True, help="Fabric presets: list, show, draw.")


@topo_app.command("list")
def topo_list() -> None:
    """List the presets, one line each."""
    for name, spec in PRESETS.items():
        console.print(f"[bold]{name:<18}[/bold] {spec.description}", highlight=False, soft_wrap=True)


@topo_app.command("show")
def topo_show(name: str, as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
              links: bool = typer.Option(False, "--links", help="every link by name (the names "
                                         "[[faults]] use)")) -> None:
    """Counts, rails, oversubscription and links of a fabric."""
    topology = build(resolve(name))
    if links:
        rows = [{"link": topology.link_name(link), "tier": link.tier, "mbps": link.mbps,
                 "buffer_bytes": link.buffer_bytes} for link in topology.links]
        if as_json:
            print(json.dumps(rows, indent=1))
            return
        table = Table("link", "tier", "Mb/s", "buffer (B)", title=f"{topology.name}: links")
        for row in rows:
            table.add_row(row["link"], row["tier"], f"{row['mbps']:g}", str(row["buffer_bytes"]))
        console.print(table)
        return
    info = summary(topology)
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
