"""Shared test configuration: emulation tests need root and Open vSwitch.

Outside CI they are skipped with the reason when this machine cannot run them.
In CI (``CI`` set) a missing root or OVS is an error: the emulation tier never
skips silently there.
"""

import os
import shutil
import tempfile

import pytest

#: Tests never read or write the machine's capacity cache (/var/lib/railcc/capacity.json).
os.environ["RAILCC_CAPACITY_FILE"] = os.path.join(tempfile.mkdtemp(prefix="railcc-test-"),
                                                  "capacity.json")


def emulation_blocker() -> str | None:
    """Why emulation tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "emulation tests need root"
    if not shutil.which("ovs-vsctl"):
        return "Open vSwitch is not installed (make setup)"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip emulation tests cleanly when they cannot run here; fail them in CI."""
    reason = emulation_blocker()
    emulation = [item for item in items if "emulation" in item.keywords]
    if reason is None or not emulation:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI is set but {reason}: {len(emulation)} emulation tests "
                                "would be skipped (run as root after make setup)")
    skip = pytest.mark.skip(reason=reason)
    for item in emulation:
        item.add_marker(skip)
