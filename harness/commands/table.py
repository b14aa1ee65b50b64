"""`harness table BUNDLE... --metric NAME@PHASE ...`: the Markdown table of medians a README quotes."""

from __future__ import annotations

import sys

from harness.errors import InputError
from harness.results.bundle import load_bundle
from harness.results.table import parse_metric, render


def cmd_table(args) -> int:
    bundles = [load_bundle(p) for p in args.bundles]
    missing = [k for k in args.kernel or [] if not any(k in b.kernels for b in bundles)]
    if missing:
        raise InputError(f"no bundle has results for {', '.join(missing)}")
    sys.stdout.write(render(bundles, [parse_metric(m) for m in args.metric or []], args.kernel))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("table", help="print a Markdown table of medians from bundles, for READMEs")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE")
    p.add_argument("--metric", action="append", metavar="NAME[@PHASE]",
                   help="a row (repeatable, in order); default: every metric that is not always 0")
    p.add_argument("--kernel", action="append", metavar="SPEC", help="only this kernel's column (repeatable)")
    p.set_defaults(func=cmd_table)
