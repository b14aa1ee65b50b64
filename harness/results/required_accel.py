"""A run that requires an accelerator (`--require-accel kvm`): no silent fallback to TCG, and no KVM run without
kvm-clock."""

from __future__ import annotations

from harness.errors import InputError
from harness.guest.launch import choose_accel
from harness.results.model import ExpectationRow, Manifest

REQUIRABLE_ACCELS = ("kvm",)
REQUIRED_CLOCKSOURCE = {"kvm": "kvm-clock"}  # a KVM guest without kvm-clock times itself with another clock


def check_required_accel(required: str | None) -> None:
    """InputError (exit 2) when `required` is not the accelerator this host can use: no silent fallback."""
    if required is None:
        return
    if required not in REQUIRABLE_ACCELS:
        raise InputError(f"--require-accel {required!r} is not one of {', '.join(REQUIRABLE_ACCELS)}")
    choice = choose_accel()
    if choice.accel != required:
        raise InputError(f"--require-accel {required}: {required} is not usable on this host ({choice.reason}); "
                         f"refusing to fall back to {choice.accel}")


def required_accel_rows(manifest: Manifest, required: str) -> list[ExpectationRow]:
    """One check per kernel: it ran under `required` and its guest timed itself with that accelerator's clock."""
    want = REQUIRED_CLOCKSOURCE[required]
    rows = []
    for k in manifest.kernels:
        ok = manifest.accel == required and k.clocksource == want
        rows.append(ExpectationRow(name="require_accel", kernel=str(k.spec), ok=ok,
                                   detail=f"accelerator {manifest.accel}, clocksource {k.clocksource} "
                                          f"(required: {required}, {want})"))
    return rows
