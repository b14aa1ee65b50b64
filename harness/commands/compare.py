"""`harness compare A [B]`: judge the metrics of kernels against a baseline kernel.

* compare A B: two bundles.  With one kernel each, B's kernel is compared against A's.  Otherwise
  kernels with the same slug are paired; failing that, A's first kernel is the baseline for each of
  B's kernels.
* compare A: one bundle with several kernels; its first kernel (manifest kernels) is the
  baseline and each other kernel is compared against it.

Metrics are matched by (name, phase) and judged by their change of medians (bootstrap
CI, Mann-Whitney U; counters by a no-overlap rule).  Timings from different accelerators, QEMU
versions or host CPUs are not judged; counters and memory still are.

Exit status: 0 nothing regressed, 1 something regressed, 2 bad input.  A failed bundle is compared
as far as its metrics go, with a warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.errors import InputError
from harness.results import stats
from harness.results.bundle import load_bundle
from harness.results.compare import (
    bundle_warnings,
    leak_findings,
    print_rich,
    run_compare,
    threshold_notes,
    to_json,
    to_markdown,
)


def cmd_compare(args) -> int:
    if args.threshold < 0:
        raise InputError(f"--threshold must be >= 0, got {args.threshold}")
    a = load_bundle(Path(args.a))
    b = load_bundle(Path(args.b)) if args.b else None
    bundles = [a] + ([b] if b else [])
    warnings = bundle_warnings(bundles)
    threshold_for = None
    if args.aa:
        from harness.results.calibration import Calibration
        from harness.results.history import load_night

        calibration = Calibration.from_nights([load_night(Path(d)) for d in args.aa])
        if not calibration:
            raise InputError(f"--aa {' '.join(args.aa)}: no A/A run there (a bundle with one kernel twice, an "
                             f"aa-* scenario, or a merge.json cell marked aa)")
        threshold_for = calibration.threshold_for(b or a, args.threshold)
    comparisons = run_compare(a, b, args.threshold, threshold_for)
    leaks = leak_findings(bundles)
    if args.json:
        json.dump(to_json(comparisons, bundles, warnings, args.threshold, leaks), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.md:
        sys.stdout.write(to_markdown(comparisons, warnings, args.threshold, leaks))
    else:
        print_rich(comparisons, warnings, args.threshold, leaks)
    if args.aa and not args.json:
        print("\n".join(threshold_notes(comparisons)))
    return 1 if leaks or any(c.count(stats.REGRESSION) for c in comparisons) else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare kernels' metrics across one or two bundles",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="baseline bundle (or a bundle with several kernels)")
    p.add_argument("b", metavar="B", nargs="?", help="bundle to compare against A")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--md", action="store_true", help="print Markdown")
    p.add_argument("--threshold", type=float, default=stats.DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help="flag only changes larger than PCT percent (default %(default)s)")
    p.add_argument("--aa", metavar="DIR", action="append",
                   help="A/A runs to calibrate per-metric thresholds from (a results directory; repeatable); "
                        "metrics they did not measure on this runner kind keep --threshold")
    p.set_defaults(func=cmd_compare)
