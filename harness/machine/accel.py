"""Which accelerator works here, found out by booting a real guest kernel, not by trusting /dev/kvm.

Some hosts expose a /dev/kvm that cannot run an unmodified guest kernel (e.g. a paravirtual PVM
KVM): QEMU then reports "KVM internal error" or the guest hangs.  The probe boots the stock kernel
with KVM and a short timeout; if it does not reach userspace the harness uses TCG.  The answer is
cached per host and QEMU version.
"""

from __future__ import annotations

import functools
import json
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.constants import QEMU_BINARY
from harness.errors import HarnessError
from harness.machine.config import MachineConfig, parallel_tcg
from harness.paths import cache_root
from harness.process import run_command

# QEMU's TCG, one host thread per vCPU, can run an instruction that another vCPU has just patched back (the
# kernel's text_poke_bp()): the guest dies at boot with "Oops: int3" at a static-key site, about 1 boot in
# 30-60 with 2 vCPUs on an idle host; a KVM guest nested in a TCG host (the KVM runner VM) meets it too, and so
# does the runner VM itself.  Such a boot is booted once more, and the result says so.
TCG_TEXT_POKE_RACE = re.compile(r"Oops: int3\b")

# Boots a guest under KVM: (it reached userspace, why).  The guest layer provides it (guest.launch.probe_kvm).
KvmProbe = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str
    cached: bool


@functools.cache  # one QEMU per process; every TCG boot asks (host_key) and --version costs a subprocess
def qemu_version(binary: str = QEMU_BINARY) -> str:
    try:
        out = run_command([binary, "--version"]).stdout
    except HarnessError as exc:
        raise HarnessError(f"{binary} is not usable ({exc}): apt-get install qemu-system-x86") from None
    return out.splitlines()[0].removeprefix("QEMU emulator version ").strip()


@functools.cache
def host_cpu_emulated() -> bool:
    """Whether this host's own CPU is QEMU's TCG (the KVM runner VM): a KVM guest's code then runs on the outer
    TCG, one thread per vCPU, and meets TCG's races as a TCG guest does."""
    try:
        return "QEMU TCG CPU" in Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False


def guest_vcpus_on_mttcg(accel: str, config: MachineConfig) -> bool:
    """Whether the guest's vCPUs run at once as TCG threads: parallel TCG here, or KVM nested in a TCG host."""
    return parallel_tcg(accel, config) or (accel == "kvm" and config.cpus > 1 and host_cpu_emulated())


def host_key() -> str:
    """This host and its QEMU: what cached facts about guests (the accelerator, the TSC rate) hold for."""
    return f"{platform.node()}|{platform.release()}|{qemu_version()}"


def _cache_file() -> Path:
    return cache_root() / "accel.json"


def choose_accel(probe: KvmProbe, refresh: bool = False) -> AccelChoice:
    """The accelerator to use, from the cache or a fresh `probe`."""
    key = host_key()
    path = _cache_file()
    if not refresh and path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return AccelChoice(cached["accel"], cached["reason"], True)
        except (ValueError, KeyError):
            pass  # a corrupt cache entry is simply probed again
    ok, reason = probe()
    choice = AccelChoice("kvm" if ok else "tcg", reason, False)
    path.write_text(json.dumps({"key": key, "accel": choice.accel, "reason": reason, "probed": time.time()}))
    return choice


def describe(choice: AccelChoice) -> str:
    """The one line the harness prints about its accelerator."""
    if choice.accel == "kvm":
        return f"accelerator: kvm ({choice.reason})"
    return f"accelerator: KVM unusable ({choice.reason}); falling back to TCG"
