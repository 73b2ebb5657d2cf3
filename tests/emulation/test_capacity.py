"""The trusted-capacity sweep, its cache, and `railcc run` refusing (or being forced past) it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.capacity.cache import CACHE_FILE, Capacity, lookup, save
from experiments.capacity.sweep import sweep
from fabric.measure.machine import machine_info
from fabric.net.cleanup import list_netns
from topologies import preset

pytestmark = pytest.mark.emulation
RAILCC = str(Path(sys.executable).with_name("railcc"))
SPECS = Path(__file__).parents[2] / "experiments" / "specs"
SMALL = preset("rail-2tier-small")


def test_the_sweep_finds_the_largest_trusted_rate():
    # 2.5 Mb/s per NIC is trusted here; 32 NICs at 160 Mb/s (5 Gb/s) cannot be.
    found, steps = sweep(SMALL, "test", seconds=1.0, rates=(2.5, 160.0))
    assert [s.trusted for s in steps] == [True, False], steps
    assert found is not None and found.nic_mbps == 2.5 and found.nics == 32
    assert found.frames_per_s > 0 and steps[1].reasons


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts and ends with no cached capacity (other tests run specs freely)."""
    CACHE_FILE.unlink(missing_ok=True)
    yield
    CACHE_FILE.unlink(missing_ok=True)


def cached(nic_mbps: float) -> None:
    """Pretend this machine measured ``nic_mbps`` for rail-2tier-small."""
    save(SMALL, Capacity("rail-2tier-small", 32, nic_mbps, 1000.0, "2026-12-01T00:00:00",
                         machine_info(), "railcc check rail-2tier-small --capacity"), CACHE_FILE)
    assert lookup(SMALL, machine_info(), CACHE_FILE).nic_mbps == nic_mbps


def test_run_refuses_a_spec_above_twice_the_capacity_and_starts_nothing(tmp_path):
    cached(2.0)
    before = set(list_netns())
    result = subprocess.run([RAILCC, "run", str(SPECS / "headline.toml"), "-o",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "nic_mbps = 10 is above 2 x the trusted capacity" in line
    assert set(list_netns()) == before and not (tmp_path / "out").exists()


def test_forced_past_the_capacity_the_run_is_untrusted(tmp_path):
    cached(2.0)
    spec = tmp_path / "short.toml"
    spec.write_text((SPECS / "allreduce.toml").read_text().replace('sizes = ["1MB", "4MB"]',
                                                                   'sizes = ["256KB"]'))
    result = subprocess.run([RAILCC, "run", str(spec), "-o", str(tmp_path / "out"), "--force",
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '"trusted": false' in result.stdout
    assert "run forced past the capacity check: nic_mbps = 10 is above" in result.stdout
