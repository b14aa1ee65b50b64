"""A preset delay loop (``lpj=``) for TCG guests with more than one vCPU.

QEMU's TCG CPUs lack the constant-TSC feature, so a secondary CPU cannot take the boot CPU's TSC-derived
loops_per_jiffy: it calibrates its own delay loop against the timer tick, which under TCG costs about 0.3 s
of a 2-vCPU boot here and ends wrong (its udelay about 3x short).  Under TCG in real time the guest's TSC
is the host's, so the boot CPU's measurement ("tsc: Detected N MHz processor") holds for every later boot
on this host and QEMU: it is remembered after the first boot, and later boots pass lpj = TSC kHz * 1000 /
CONFIG_HZ, the value the boot CPU computes for itself.  Memory management and the clocks the probes read
are untouched.  Under icount the TSC is the instruction count and under KVM the secondaries know the TSC:
neither gets a preset.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from harness.guest.ssh import Guest
from harness.kernels.spec import GuestKernel
from harness.machine import accel
from harness.machine.config import MachineConfig, parallel_tcg
from harness.paths import cache_root

DETECTED = re.compile(r"tsc: Detected (\d+)\.(\d{3}) MHz processor")


def _cache_file() -> Path:
    return cache_root() / "tsc.json"


def wants_preset(accel_name: str, config: MachineConfig) -> bool:
    return parallel_tcg(accel_name, config)


def known_tsc_khz() -> int | None:
    """The TSC rate TCG guests measured on this host and QEMU, once one has booted."""
    try:
        cached = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return None
    khz = cached.get("tsc_khz") if cached.get("key") == accel.host_key() else None
    return khz if isinstance(khz, int) and khz > 0 else None


def kernel_hz(kernel: GuestKernel) -> int | None:
    """CONFIG_HZ of the kernel, from its config (None for an image without one)."""
    config = kernel.record.config
    try:
        text = Path(config).read_text() if config else ""
    except OSError:
        return None
    m = re.search(r"^CONFIG_HZ=(\d+)$", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def preset(kernel: GuestKernel, accel_name: str, config: MachineConfig) -> str | None:
    """``lpj=N`` for this boot, or None (not TCG in real time with several vCPUs, or nothing known yet)."""
    if not wants_preset(accel_name, config) or "lpj=" in config.cmdline:  # the scenario's own lpj= stands
        return None
    khz, hz = known_tsc_khz(), kernel_hz(kernel)
    return f"lpj={khz * 1000 // hz}" if khz and hz else None


def parse_tsc_khz(kernel_log: str) -> int | None:
    m = DETECTED.search(kernel_log)
    return int(m.group(1)) * 1000 + int(m.group(2)) if m else None


def learn(guest: Guest) -> None:
    """After a TCG boot in real time: remember the TSC rate the guest measured, if none is known yet."""
    if known_tsc_khz() is not None:
        return
    khz = parse_tsc_khz(guest.run("dmesg | grep -m1 'tsc: Detected'", check=False).stdout)
    if khz is None:
        return
    path = _cache_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"key": accel.host_key(), "tsc_khz": khz}))
    tmp.rename(path)
