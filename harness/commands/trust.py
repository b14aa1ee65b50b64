"""`harness trust BUNDLE...`: the trust matrix (design x host condition) of stale-data bundles, in Markdown."""

from __future__ import annotations

import sys

from harness.results.bundle import load_bundle
from harness.results.trust import render


def cmd_trust(args) -> int:
    text, sound = render([load_bundle(p) for p in args.bundles])
    sys.stdout.write(text)
    if not sound:
        sys.stderr.write("UNCHECKED: a design skipped zeroing where no page was checked; that scenario proves nothing\n")
    return 0 if sound else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("trust", help="the trust matrix: each design under each host condition (one "
                                            "stale-data bundle per condition): leaks, skipped zeroing, checks")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE")
    p.set_defaults(func=cmd_trust)
