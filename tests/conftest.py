"""Shared test configuration: emulation tests need root and Open vSwitch."""

import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    """Skip emulation tests cleanly when they cannot run here (no root, no OVS)."""
    reason = None
    if os.geteuid() != 0:
        reason = "emulation tests need root"
    elif not shutil.which("ovs-vsctl"):
        reason = "Open vSwitch is not installed (make setup)"
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "emulation" in item.keywords:
            item.add_marker(skip)
