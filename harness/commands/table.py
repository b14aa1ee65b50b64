"""`harness table BUNDLE... --metric NAME@PHASE ...`: the Markdown table of medians a README quotes."""

from __future__ import annotations

import sys

from harness.errors import InputError
from harness.results.bundle import load_bundle
from harness.results.selftests import has_selftests
from harness.results.selftests import table_markdown as selftest_table
from harness.results.table import parse_metric, render, render_by_bundle


def cmd_table(args) -> int:
    bundles = [load_bundle(p) for p in args.bundles]
    if args.selftests:
        for b in bundles:
            if not has_selftests(b):
                raise InputError(f"{b.path}: no kselftest results in this bundle")
            sys.stdout.write(f"From `{b.scenario}`, {b.started[:10]}, {b.accel or '?'}, timing {b.timing}, "
                             f"{b.manifest.reps} repetition(s) per kernel; cases per repetition; bundle "
                             f"`{b.path.name}` ({b.status}).\n\n" + selftest_table(b))
        return 0
    missing = [k for k in args.kernel or [] if not any(k in b.kernels for b in bundles)]
    if missing:
        raise InputError(f"no bundle has results for {', '.join(missing)}")
    metrics = [parse_metric(m) for m in args.metric or []]
    if args.by_bundle:
        absent = [f"{b.path.name} has no {k}" for b in bundles for k in args.kernel or [] if k not in b.kernels]
        if absent:
            raise InputError(f"--by-bundle needs every kernel in every bundle: {'; '.join(absent)}")
        sys.stdout.write(render_by_bundle(bundles, metrics, args.kernel))
    else:
        sys.stdout.write(render(bundles, metrics, args.kernel))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("table", help="print a Markdown table of medians from bundles, for READMEs")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE")
    p.add_argument("--metric", action="append", metavar="NAME[@PHASE]",
                   help="a row (repeatable, in order); default: every metric that is not always 0")
    p.add_argument("--kernel", action="append", metavar="SPEC", help="only this kernel's column (repeatable)")
    p.add_argument("--selftests", action="store_true",
                   help="the kselftest results instead: per test, pass/fail/skip per kernel and why skipped")
    p.add_argument("--by-bundle", action="store_true",
                   help="the same kernels in several bundles (configurations): a row per bundle and metric, and "
                        "each kernel's change against the first")
    p.set_defaults(func=cmd_table)
