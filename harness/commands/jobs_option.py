"""`--jobs N`, the same option on every command that runs scenarios."""

from __future__ import annotations

from harness.errors import InputError


def add_jobs_option(p) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="icount runs: guests at once (default: what this host's cores and memory allow); "
                        "realtime runs always run one guest at a time")


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
