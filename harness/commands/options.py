"""The options every command that runs scenarios shares: `--timing`, `--jobs N`, `--require-accel kvm`."""

from __future__ import annotations

from harness.machine.config import TIMING_MODES
from harness.results.required_accel import REQUIRABLE_ACCELS

TIMING_HELP = ("guest time: realtime, or icount (TCG: instruction counting, repeatable timings); "
               "overrides the scenario's qemu.timing")


def add_timing_option(p, help: str = TIMING_HELP) -> None:
    p.add_argument("--timing", choices=TIMING_MODES, help=help)


def add_jobs_option(p) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="icount runs: guests at once (default: what this host's cores and memory allow); "
                        "realtime runs always run one guest at a time")


def add_require_accel_option(p) -> None:
    p.add_argument("--require-accel", choices=REQUIRABLE_ACCELS,
                   help="exit 2 when this accelerator is not usable here instead of falling back to TCG; the run "
                        "fails unless every guest used it and its clock (kvm-clock)")
