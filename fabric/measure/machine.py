"""What the emulator's speed depends on: CPU, memory, kernel, Open vSwitch and its datapath."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from fabric.net import ovs


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), platform.processor())


def machine_info() -> dict[str, Any]:
    """This machine, as the capacity cache keys it (and manifest.json records it)."""
    return {"cores": os.cpu_count(), "cpu": cpu_model(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1),
            "kernel": platform.release(), "ovs": ovs.version(), "datapath": ovs.datapath_type()}
