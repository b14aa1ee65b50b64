"""Which accelerator works here, found out by booting a real guest kernel, not by trusting /dev/kvm.

Some hosts expose a /dev/kvm that cannot run an unmodified guest kernel (e.g. a paravirtual PVM
KVM): QEMU then reports "KVM internal error" or the guest hangs.  The probe boots the stock kernel
with KVM and a short timeout; if it does not reach userspace the harness uses TCG.  The answer is
cached per host and QEMU version.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.paths import cache_root

PROBE_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str
    cached: bool


def qemu_version(binary: str = "qemu-system-x86_64") -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        raise HarnessError(f"{binary} is not usable ({exc}): apt-get install qemu-system-x86") from None
    return out.splitlines()[0].removeprefix("QEMU emulator version ").strip()


def _cache_key() -> str:
    return f"{platform.node()}|{platform.release()}|{qemu_version()}"


def _cache_file() -> Path:
    return cache_root() / "accel.json"


def _probe_kvm() -> tuple[bool, str]:
    """Boot the stock kernel under KVM; True if it reached userspace within the timeout."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    from harness.image import build_image
    from harness.kernel import parse_kernel_spec, resolve_kernel
    from harness.scenario import GuestOptions, QemuOptions
    from harness.image import ssh_keys
    from harness.vm import VM, GuestDied

    kernel = resolve_kernel(parse_kernel_spec("stock"))
    initrd = build_image(kernel)
    with tempfile.TemporaryDirectory(prefix="accel-probe-") as tmp:
        vm = VM(kernel=kernel, initrd=initrd, guest=GuestOptions(memory_mib=512, cpus=1), qemu=QemuOptions(),
                accel="kvm", logdir=Path(tmp), keys=ssh_keys())
        try:
            with vm:
                started = time.monotonic()
                while time.monotonic() - started < PROBE_TIMEOUT_S:
                    vm.check_alive()
                    status = vm.qmp.execute("query-status", timeout=2)
                    if status.get("status") == "internal-error":
                        return False, "KVM internal error"
                    if "balloon-testbed: guest ready" in vm.serial_text():
                        return True, f"a guest kernel booted under KVM in {time.monotonic() - started:.1f} s"
                    time.sleep(0.1)
                return False, f"a guest kernel did not boot under KVM within {PROBE_TIMEOUT_S:.0f} s"
        except (GuestDied, HarnessError) as exc:
            err = (Path(tmp) / "qemu.stderr").read_text(errors="replace").strip() if (Path(tmp) / "qemu.stderr").exists() else ""
            return False, (err.splitlines()[0] if err else str(exc))


def choose_accel(refresh: bool = False) -> AccelChoice:
    """The accelerator to use, from the cache or a fresh probe."""
    key = _cache_key()
    path = _cache_file()
    if not refresh and path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return AccelChoice(cached["accel"], cached["reason"], True)
        except (ValueError, KeyError):
            pass  # a corrupt cache entry is simply probed again
    ok, reason = _probe_kvm()
    choice = AccelChoice("kvm" if ok else "tcg", reason, False)
    path.write_text(json.dumps({"key": key, "accel": choice.accel, "reason": reason, "probed": time.time()}))
    return choice


def describe(choice: AccelChoice) -> str:
    """The one line the harness prints about its accelerator."""
    if choice.accel == "kvm":
        return f"accelerator: kvm ({choice.reason})"
    return f"accelerator: KVM unusable ({choice.reason}); falling back to TCG"
