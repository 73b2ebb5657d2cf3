"""`railcc up`, `calibrate`, `clean`, `demo` and the internal `controller` command."""

from __future__ import annotations

import datetime
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.table import Table

from experiments.cli.app import Commands, UserError, console, err_console
from experiments.cli.topology_arg import resolve
from topologies import DEFAULT_PRESET, Topology, build

ALGO_HELP = "controller algorithm (see `railcc controller --help`)"

commands = Commands()


@contextmanager
def live_fabric(topology: Topology, algorithm: str, run_dir: Path | None = None,
                quiet: bool = False) -> Iterator["Network"]:
    """A started Network with a progress spinner; stopped on exit, Ctrl-C or SIGTERM."""
    from controllers.algorithms.registry import ALGORITHMS
    from fabric.net.network import Network, require_root

    if algorithm not in ALGORITHMS:
        raise UserError(f"--controller: unknown algorithm {algorithm!r} "
                        f"(known: {', '.join(sorted(ALGORITHMS))})")
    require_root()
    out = err_console
    with out.status(f"building {topology.name} ...") as status:
        net = Network(topology, algorithm, run_dir,
                      progress=lambda message: status.update(f"{topology.name}: {message}"))
        net.start()
    if not quiet:
        out.print(f"[green]fabric {topology.name} up[/green] (run {net.prefix}, "
                  f"{net.datapath} datapath, {len(topology.links)} links shaped and verified, "
                  f"controller {algorithm}) in {sum(net.timings.values()):.1f} s", highlight=False)
    try:
        yield net
    finally:
        with out.status("tearing down ..."):
            net.stop()
        if not quiet:
            out.print(f"fabric {topology.name} removed ({net.timings['teardown']:.1f} s)")


@commands.command()
def up(name: str = typer.Argument(DEFAULT_PRESET, help="preset or .toml/.json topology"),
       controller: str = typer.Option("ecmp", "--controller", help=ALGO_HELP)) -> None:
    """Live fabric + Mininet CLI (pingall, iperf, h1 ping h2 ...); reads piped commands too."""
    topology = build(resolve(name))
    with live_fabric(topology, controller) as net:
        from fabric.net.mininet_cli import run_cli
        run_cli(net)


def _calibration_table(report: dict, title: str) -> Table:
    table = Table(title=title)
    for column in ("link class", "path", "configured Mb/s", "measured Mb/s", "error %", "ok"):
        table.add_column(column, justify="right" if "/s" in column or "%" in column else "left")
    for row in report["links"]:
        table.add_row(row["link_class"], row["path"], f"{row['configured_mbps']:.2f}",
                      f"{row['measured_mbps']:.2f}", f"{row['error_pct']:+.1f}",
                      "yes" if row["ok"] else "[red]NO[/red]")
    over = report["overload"]
    if over:
        where = "only there" if not over["drops_elsewhere"] else f"also {over['drops_elsewhere']}"
        table.add_row("2:1 overload", f"{over['offered_ratio']:.2f}x into {over['port']}",
                      f"{over['configured_mbps']:.2f}", f"{over['delivered_mbps']:.2f}",
                      f"{over['error_pct']:+.1f}",
                      ("yes" if over["ok"] else "[red]NO[/red]") +
                      f": {over['drops_at_port']} drops, {where}")
    return table


def run_calibration(net, seconds: float) -> dict:
    """Link-class rates and the overload check on a live fabric, as a JSON-ready dict."""
    from fabric.measure import calibrate as cal
    links = cal.calibrate_links(net, seconds)
    overload = cal.overload_port(net, seconds) if net.topology.spec.servers_per_pod >= 3 else None
    return dict(cal.as_dict(links, overload), topology=net.topology.name, run=net.prefix)


@commands.command()
def calibrate(name: str = typer.Argument(DEFAULT_PRESET, help="preset or topology file"),
              seconds: float = typer.Option(4.0, help="seconds per measurement"),
              controller: str = typer.Option("ecmp", "--controller", help=ALGO_HELP),
              as_json: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Measure each link class's real rate and a port's queue under 2:1 overload."""
    topology = build(resolve(name))
    with live_fabric(topology, controller, quiet=as_json) as net:
        with err_console.status("measuring link classes with iperf3 ..."):
            report = run_calibration(net, seconds)
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        console.print(_calibration_table(report, f"calibration of {topology.name}"))
    if not report["ok"]:
        sys.exit(1)


@commands.command()
def clean(all_runs: bool = typer.Option(False, "--all", help="also runs whose owner is alive")) -> None:
    """Remove railcc's leftovers (namespaces, bridges, veths, processes) and nothing else."""
    from fabric.net.cleanup import clean_all
    from fabric.net.network import require_root
    require_root()
    report = clean_all(include_live=all_runs)
    console.print(f"removed {len(report.runs)} run(s): {report.netns} namespaces, "
                  f"{report.bridges} bridges, {report.intfs} interfaces, "
                  f"{report.processes} processes", highlight=False)
    if report.skipped_live:
        console.print(f"left alone (still running): {', '.join(report.skipped_live)}; "
                      "use --all to remove them too")


@commands.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def controller(ctx: typer.Context) -> None:
    """(internal) The SDN controller process; see --help."""
    from controllers.openflow.launcher import main as launcher_main
    sys.exit(launcher_main(list(ctx.args)))


@commands.command()
def check(name: str = typer.Argument(DEFAULT_PRESET, help="preset or topology file"),
          output: Optional[Path] = typer.Option(None, "-o", "--output", help="results folder"),
          seconds: float = typer.Option(3.0, help="seconds per calibration measurement"),
          capacity: bool = typer.Option(False, "--capacity",
                                        help="instead: find the largest trusted NIC rate of "
                                             "this fabric on this machine (a short sweep) "
                                             "and cache it for `railcc run` / `railcc ab`")
          ) -> None:
    """Bring up a fabric, prove all-pairs reachability, calibrate, tear down (or, with
    --capacity, measure and cache the fabric's trusted capacity)."""
    from fabric.measure.reachability import all_pairs_ping
    if capacity:
        _check_capacity(name, min(seconds, 2.0))
        return
    topology = build(resolve(name))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (output or Path("runs") / f"check-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with live_fabric(topology, "ecmp", run_dir) as net:
        with err_console.status("all-pairs ping ..."):
            pings = all_pairs_ping(net)
        console.print(f"all-pairs reachability: {pings.sent} pings between "
                      f"{len(topology.nics)} NICs on {topology.spec.rails} rails and "
                      f"{topology.spec.pods} pods, {pings.loss_pct:.1f} % lost", highlight=False)
        with err_console.status("calibrating ..."):
            report = run_calibration(net, seconds)
    report["reachability"] = {"sent": pings.sent, "failures": pings.failures}
    (run_dir / "check.json").write_text(json.dumps(report, indent=1))
    console.print(_calibration_table(report, f"calibration of {topology.name}"))
    console.print(f"results: {run_dir / 'check.json'}", highlight=False)
    if pings.failures or not report["ok"]:
        sys.exit(1)


def _check_capacity(name: str, seconds: float) -> None:
    """The --capacity sweep: progress per rate, the figure, the cache entry."""
    from experiments.capacity.cache import CACHE_FILE, save
    from experiments.capacity.sweep import sweep
    from fabric.net.network import require_root
    spec = resolve(name)
    require_root()
    build(spec)  # a bad fabric fails here, before anything starts
    command = f"railcc check {name} --capacity"

    def progress(step) -> None:
        verdict = "trusted" if step.trusted else "NOT trusted: " + "; ".join(step.reasons)[:200]
        console.print(f"  {step.nic_mbps:g} Mb/s per NIC: efficiency "
                      f"{100 * step.efficiency:.1f} %, {step.frames_per_s:,.0f} frames/s, "
                      f"{verdict}", highlight=False)

    console.print(f"capacity of {spec.name} ({spec.servers * spec.rails} NICs): All2All with "
                  f"PXN over every server, ~{seconds:g} s per rate, until a run is untrusted",
                  highlight=False)
    with err_console.status("sweeping ..."):
        found, steps = sweep(spec, command, seconds, progress=progress)
    if found is None:
        raise UserError(f"{spec.name}: not trusted even at {steps[0].nic_mbps:g} Mb/s per NIC "
                        "on this machine; nothing cached")
    save(spec, found)
    console.print(f"trusted capacity: {found.nic_mbps:g} Mb/s per NIC "
                  f"({found.offered_gbps:.2f} Gb/s offered over {found.nics} NICs, "
                  f"{found.frames_per_s:,.0f} frames/s); cached in {CACHE_FILE}",
                  highlight=False)
