"""`harness trust BUNDLE...`: the trust matrix (design x host condition) of stale-data bundles, in Markdown."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import InputError
from harness.results.bundle import load_bundle
from harness.results.trust import render


def bundle_paths(paths: list[str]) -> list[Path]:
    """Each path that is a bundle, and every bundle below each one that is not (a nightly's results dir)."""
    out: list[Path] = []
    for p in map(Path, paths):
        found = [p] if (p / "manifest.json").is_file() else sorted(m.parent for m in p.rglob("manifest.json"))
        if not found:
            raise InputError(f"{p}: not a bundle, and no bundle below it")
        out += found
    return out


def cmd_trust(args) -> int:
    text, sound = render([load_bundle(p) for p in bundle_paths(args.bundles)])
    sys.stdout.write(text)
    if not sound:
        sys.stderr.write("UNCHECKED: a design skipped zeroing where no page was checked; that scenario proves nothing\n")
    return 0 if sound else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("trust", help="the trust matrix: each design under each host condition (one "
                                            "stale-data bundle per condition): leaks, skipped zeroing, checks")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE",
                   help="a stale-data bundle, or a directory with bundles below it (harness nightly "
                        "scenarios/nightly-trust.yaml --results DIR)")
    p.set_defaults(func=cmd_trust)
