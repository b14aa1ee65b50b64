"""`--jobs N`, the same option on every command that runs scenarios."""

from __future__ import annotations


def add_jobs_option(p) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="icount runs: guests at once (default: what this host's cores and memory allow); "
                        "realtime runs always run one guest at a time")
