"""`--require-accel kvm` (run, run-shard, nightly), the same option on every command that runs scenarios."""

from __future__ import annotations

from harness.results.required_accel import REQUIRABLE_ACCELS


def add_require_accel_option(p) -> None:
    p.add_argument("--require-accel", choices=REQUIRABLE_ACCELS,
                   help="exit 2 when this accelerator is not usable here instead of falling back to TCG; the run "
                        "fails unless every guest used it and its clock (kvm-clock)")
