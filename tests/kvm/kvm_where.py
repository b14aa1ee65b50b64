"""Running a command where KVM works: on this host when its own KVM is usable (a real runner), else in the
KVM runner VM (harness kvm-runner: a TCG guest with nested KVM).  A host where neither works skips, saying why."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from harness.guest.runner_vm import DIED_AT_BOOT
from harness.paths import REPO_ROOT

HARNESS = str(Path(sys.executable).parent / "harness")
RUNNER_UNUSABLE = "harness: error: KVM runner VM:"
# The runner VM itself lost: its own kernel died (a TCG guest too: under load its MTTCG oopsed on an int3 in
# __schedule while the kernel patched its code, or overflowed a stack), or it hung (once at 100 % CPU with its
# nested guest silent mid-line, 13 minutes after a deflate, until it was stopped), or it stalled (RCU stall
# reports until the runner gave up on it), or its boot died of TCG's patching race each time it was booted.
RUNNER_LOST = ("harness: error: the KVM runner VM stopped before its job finished",
               "harness: error: the KVM runner VM's job did not finish within",
               "harness: error: the KVM runner VM's kernel")
# A nested guest's oops, its triple fault (QEMU exits as -no-reboot asks), or its boot hung (once at 0.48 s,
# silent until the harness's boot timeout): tools/kvm-checks.sh repeats a check on the same signatures.
NESTED_CRASH = ("run failed: guest kernel failure", "run failed: QEMU exited with code 0",
                "run failed: guest did not boot within")
# The runner VM's own boot died and was booted again (harness/guest/runner_vm.py): a warning, not a failure.
RUNNER_REBOOTED = f"kvm-runner: {DIED_AT_BOOT}"


def first_line(output: str, starts: tuple[str, ...]) -> str | None:
    return next((line for line in output.splitlines() if line.startswith(starts)), None)


def warn_runner_reboots(output: str) -> None:
    for line in output.splitlines():
        if line.startswith(RUNNER_REBOOTED):
            warnings.warn(line, stacklevel=2)


def host_kvm_usable() -> bool:
    from harness.guest.launch import choose_accel

    return choose_accel().accel == "kvm"


def run_with_kvm(argv: list[str], *, shares: list[Path], logs: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """`argv` in the repository root where KVM works; output captured (stdout and stderr merged)."""
    if host_kvm_usable():
        cmd = argv
    else:
        cmd = [HARNESS, "kvm-runner", "--logs", str(logs), "--timeout", str(timeout_s),
               *(a for s in shares for a in ("--share", str(s))), "--", *argv]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s + 300)
    warn_runner_reboots(proc.stdout)
    unusable = [line for line in proc.stdout.splitlines() if line.startswith(RUNNER_UNUSABLE)]
    if proc.returncode == 2 and unusable:
        pytest.skip(f"no KVM here and none in the runner VM: {unusable[0].removeprefix('harness: error: ')}")
    return proc
