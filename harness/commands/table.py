"""`harness table BUNDLE... --metric NAME@PHASE ...`: the Markdown table of medians a README quotes."""

from __future__ import annotations

import sys

from harness.results.bundle import load_bundle
from harness.results.table import parse_metric, render


def cmd_table(args) -> int:
    bundles = [load_bundle(p) for p in args.bundles]
    sys.stdout.write(render(bundles, [parse_metric(m) for m in args.metric or []]))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("table", help="print a Markdown table of medians from bundles, for READMEs")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE")
    p.add_argument("--metric", action="append", metavar="NAME[@PHASE]",
                   help="a row (repeatable, in order); default: every metric that is not always 0")
    p.set_defaults(func=cmd_table)
