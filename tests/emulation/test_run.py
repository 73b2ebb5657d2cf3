"""Whole experiment runs on rail-2tier-small: collectives complete, loss and slow links
behave as they would on a real fabric, fidelity is judged, failures clean up."""

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from experiments.analysis.analysis import analyze
from experiments.runner import run
from experiments.workload.spec import from_dict, load_spec
from fabric.net.cleanup import list_netns, netns_pids
from fabric.net.names import prefix_of_netns
from fabric.net.shaping import Shape, tc_lines
from fabric.net.sh import batch
from topologies.export import load_json
from tests.emulation.conftest import NOTHING, SESSION_PREFIXES, railcc_leftovers

pytestmark = pytest.mark.emulation
SPECS = Path(__file__).resolve().parents[2] / "experiments" / "specs"
RAILCC = str(Path(sys.executable).with_name("railcc"))


def spec_with(name: str, **tables) -> dict:
    """A shipped spec as a dict, with some tables replaced or merged."""
    data = tomllib.loads((SPECS / f"{name}.toml").read_text())
    for table, value in tables.items():
        if isinstance(value, dict) and isinstance(data.get(table), dict):
            data[table] = {**data[table], **value}
        else:
            data[table] = value
    return data


def run_spec(data: dict, out: Path, after_start=None) -> dict:
    """Run a spec dict and return its summary (the run's prefix is recorded for leak checks)."""
    experiment = from_dict(data, "test")

    def hook(net):
        SESSION_PREFIXES.add(net.prefix)
        if after_start:
            after_start(net)

    run(experiment, out, after_start=hook)
    return analyze(out)


def delivered_everything(out: Path) -> None:
    """Every scheduled message arrived whole."""
    import csv
    import json
    transfers = {t["id"]: t for t in json.loads((out / "transfers.json").read_text())}
    with (out / "deliveries.csv").open() as handle:
        got = {int(row["id"]): int(row["bytes"]) for row in csv.DictReader(handle)}
    assert got == {tid: t["size"] for tid, t in transfers.items()}


@pytest.mark.parametrize("name", ["allreduce", "all2all", "sendrecv"])
def test_shipped_collectives_complete_trusted_and_conserved(name, tmp_path):
    summary = run_spec(tomllib.loads((SPECS / f"{name}.toml").read_text()), tmp_path)
    delivered_everything(tmp_path)
    assert summary["conservation"]["ok"], summary["conservation"]
    assert summary["trusted"], summary["fidelity"]
    assert all(row["busbw_Mbps"] > 0 for row in summary["rows"])
    measured = json.loads((tmp_path / "fidelity.json").read_text())
    turns = measured["ovs_turns"]["ovs0"]
    assert turns["turns"] > 0 and 0 < turns["p50_us"] <= turns["p99_us"] <= turns["max_us"]
    # All of it went through pollgate's gate in front of netdev-linux's receive (the
    # "system", "tap" and "internal" classes of this OVS), which answers idle ports.
    assert turns["rxq_gated"] == 3
    # Judged each second by its turns, and none was late (it is trusted).
    per_second = measured["ovs_turn_ms_by_instance"]["ovs0"]
    assert len(per_second) >= len(measured["cpu_busy"]) - 1 and max(per_second) > 0


@pytest.mark.parametrize("frames, late", [(0.5, False), (1.5, True)])
def test_a_datapath_made_late_behind_the_guards_back_is_untrusted_by_its_turns(
        frames, late, tmp_path, monkeypatch):
    # pollgate paces ovs-vswitchd's main loop to turns of ``frames`` frame times (7.2 ms
    # at 10 Mb/s): a frame may wait about two of them at every hop. Its CPU share stays
    # low and the links keep their rate, so only the turn times can tell.
    pace_us = int(frames * 7211)
    monkeypatch.setenv("POLLGATE_MIN_TURN_US", str(pace_us))
    data = spec_with("allreduce", jobs=[{"name": "ring", "collective": "allreduce",
                                         "servers": 4, "sizes": ["8MB"], "iterations": 2}])
    summary = run_spec(data, tmp_path)
    delivered_everything(tmp_path)
    measured = json.loads((tmp_path / "fidelity.json").read_text())
    assert measured["ovs_turns"]["ovs0"]["min_turn_us"] == pace_us
    assert min(measured["ovs_turn_ms_by_instance"]["ovs0"]) >= pace_us / 1000
    reasons = summary["fidelity"]["reasons"]
    assert summary["trusted"] is not late, reasons
    assert any(r.startswith("datapath-late: ovs0 spent over 1 % of") for r in reasons) is late
    assert not any(r.startswith("datapath-bound") for r in reasons), reasons


def test_tiny_buffer_drops_then_go_back_n_recovers(tmp_path):
    # 5 Mb/s NICs: with a one-frame NIC burst, 10 Mb/s All2All under heavy loss costs the
    # Python NICs ~6 % of their credit in late wake-ups here (untrusted).
    data = spec_with("all2all", topology={"preset": "rail-2tier-small", "buffer_bytes": 20000,
                                          "nic_mbps": 5},
                     jobs=[{"name": "moe", "collective": "all2all", "servers": 8,
                            "sizes": ["2MB"], "pxn": False}])
    summary = run_spec(data, tmp_path)
    delivered_everything(tmp_path)
    assert summary["loss"]["switch_drops"] > 0
    assert summary["loss"]["retransmits"] > 0
    # Known gap: under very heavy drops (a 2-frame buffer) the qdisc drop counters and
    # the agents' disagree by up to ~2 % (seen 1.6 % once); beyond the analysis' slack
    # (0.5 %) the run is called untrusted rather than the gap hidden.
    balance = summary["conservation"]
    assert abs(balance["unaccounted"]) <= 0.03 * balance["sent"], balance
    # The emulator kept up (CPU, link rates, NIC lateness); only that counter gap may
    # cost the verdict.
    others = [r for r in summary["fidelity"]["reasons"] if not r.startswith("conservation:")]
    assert others == [], summary["fidelity"]
    # An All2All incast: the drops are in the ToRs' queues towards the servers (ports.csv).
    ports = summary["queues"]["ports"].values()
    assert sum(q["drops"] for q in ports if q["tier"] == "host") > 0, summary["queues"]


def test_allreduce_busbw_follows_the_slowest_link(tmp_path):
    slow_mbps = 5.0
    # A go-back-N window of 12 keeps the slowed queue backlogged (no drop: its buffer is
    # 10 frames); with 8 it drained every few frames once a window-limited NIC's next
    # frame left a frame time after the ACK that allowed it (its last bit), and stretches
    # that short are not judged (fidelity.MIN_STRETCH_S).
    data = spec_with("allreduce", transport={"kind": "roce", "window_packets": 12},
                     jobs=[{"name": "ring", "collective": "allreduce", "servers": 8,
                            "rails": [0], "sizes": ["2MB"], "iterations": 1}])

    def slow_down(net):
        nic = net.topology.nics_of("h1")[0]
        mtu = net.topology.spec.mtu
        buffer = net.topology.spec.buffer_bytes
        for intf, netns in ((nic.intf, net.netns("h1")),
                            (net.switch_intf(nic.tor, nic.tor_port), net.switch_netns(nic.tor))):
            class_line = tc_lines(Shape(intf, netns, slow_mbps, buffer, mtu))[1]
            batch("tc", [class_line], netns=netns)

    summary = run_spec(data, tmp_path, after_start=slow_down)
    delivered_everything(tmp_path)
    busbw = summary["rows"][0]["busbw_Mbps"]
    assert abs(busbw - slow_mbps) <= 0.10 * slow_mbps, busbw
    # The link was slowed behind the guard's back (the run still says 10 Mb/s): the link
    # check must see its queue backlogged and sending half its rate, focus reads or not.
    nic = load_json(tmp_path / "topology.json").nics_of("h1")[0]
    shortfalls = summary["fidelity"]["checks"]["link_rate_errors"]
    assert any(s.startswith(f"{nic.tor}:{nic.tor_port} sent") for s in shortfalls), shortfalls
    measured = json.loads((tmp_path / "fidelity.json").read_text())
    assert measured["telemetry_focus_reads"] > 0 and measured["telemetry_focus_error"] is None


def test_offered_load_beyond_the_machine_is_untrusted(tmp_path):
    # 32 NICs at 200 Mb/s of jumbo frames: ~90 k packets/s for 2 cores to make,
    # forward and receive in Python agents and one OVS thread: it cannot keep up.
    data = spec_with("all2all", topology={"preset": "rail-2tier-small", "nic_mbps": 200,
                                          "buffer_bytes": 400000},
                     jobs=[{"name": "flood", "collective": "all2all", "servers": 8,
                            "sizes": ["8MB"]}],
                     limits={"run_timeout_s": 120})
    summary = run_spec(data, tmp_path)
    assert summary["trusted"] is False
    # Untrusted because the machine could not keep up, not for any other reason: CPU or
    # forwarding thread saturated, NICs late, or (seen once in CI, with neither saturated
    # in enough one-second samples) packets held in the emulator beyond the modelled queues.
    reasons = summary["fidelity"]["reasons"]
    assert any(r.startswith(("CPU-bound", "datapath-bound", "NIC agents fell behind"))
               or "the emulator itself (NIC agents or datapath) queued" in r
               for r in reasons), reasons


def test_bad_spec_is_one_line_and_starts_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    text = (SPECS / "allreduce.toml").read_text().replace('sizes = ["1MB", "4MB"]',
                                                          'sizes = ["1MB", 0]')
    bad.write_text(text)
    before = set(list_netns())
    result = subprocess.run([RAILCC, "run", str(bad), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.strip() == "railcc: error: jobs[0].sizes[1]: must be > 0, got 0"
    assert set(list_netns()) == before


def _cmdline(pid: int) -> bytes:
    """A process's command line (empty if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_agent_dying_mid_run_fails_clearly_and_cleans_up(tmp_path):
    spec = SPECS / "allreduce.toml"
    load_spec(spec)
    before = set(list_netns())
    proc = subprocess.Popen([RAILCC, "run", str(spec), "-o", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, prefix = None, None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for ns in set(list_netns()) - before:
            if ns.endswith("-h3"):
                prefix = prefix_of_netns(ns)
                agents = [pid for pid in netns_pids(ns) if b"fabric.nic.agent" in _cmdline(pid)]
                if agents and (tmp_path / "out" / "agents" / "h3.sock").exists():
                    victim = agents[0]
        time.sleep(0.1)
    assert victim, "the agent of h3 never started"
    SESSION_PREFIXES.add(prefix)
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "agent h3 died" in err
    assert railcc_leftovers({prefix}) == NOTHING


def test_a_run_that_times_out_keeps_its_records_and_says_why(tmp_path):
    # 32 MB per rank at 10 Mb/s cannot finish in the 2 s limit: the round times out. The
    # agents' records, the port telemetry and the counters are still written, the verdict
    # says the run failed, and the analysis copes with messages that never arrived.
    from fabric.nic.fleet import RunTimedOut
    data = spec_with("allreduce", limits={"run_timeout_s": 2},
                     jobs=[{"name": "ring", "collective": "allreduce", "servers": 4,
                            "sizes": ["32MB"]}])
    with pytest.raises(RunTimedOut):
        run_spec(data, tmp_path)
    for name in ("messages.csv", "deliveries.csv", "delays.csv", "ports.csv", "counters.json",
                 "fidelity.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = analyze(tmp_path)
    assert not summary["trusted"]
    assert summary["fidelity"]["reasons"][0].startswith(
        "the run failed in round 1: RunTimedOut: run timed out after 2 s")
    row = summary["rows"][0]
    assert row["incomplete"] > 0 and row["efficiency"] is None and row["packets"] > 0
    assert railcc_leftovers() == NOTHING  # the fabric went away all the same


def test_ctrl_c_keeps_the_records_says_so_and_exits_130(tmp_path):
    # A terminal's Ctrl-C: SIGINT to the whole process group, harness and agents alike.
    # Before: exit 0, nothing printed, no records.
    out = tmp_path / "out"
    proc = subprocess.Popen([RAILCC, "run", str(SPECS / "allreduce.toml"), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: (os.setpgrp(),
                                                signal.signal(signal.SIGINT, signal.SIG_DFL)))
    deadline = time.monotonic() + 60
    while not (out / "transfers.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    while not (out / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    prefix = json.loads((out / "manifest.json").read_text())["run_prefix"]
    SESSION_PREFIXES.add(prefix)
    while not list((out / "agents").glob("*.sock")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # into the traffic
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "railcc: interrupted" in err and f"what it recorded is in {out}" in err
    failed = json.loads((out / "fidelity.json").read_text())["failed"]
    assert failed["error"] == "KeyboardInterrupt"
    assert len((out / "messages.csv").read_text().splitlines()) > 1
    assert railcc_leftovers({prefix}) == NOTHING
