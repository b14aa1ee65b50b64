"""`harness report RESULTS_DIR --out DIR [--history DIR]`: a static HTML report (index.html) and report.md.

* First, the findings: leaks, failed runs and expectations, regressions and improvements against each
  scenario's baseline kernel (its first) and against last night (the last night of --history), each
  linking to its evidence.
* One card per scenario (its latest bundle, whatever its status): headline metrics per kernel, host RSS
  over time with the phases as bands, fault-in distributions, zeroing per phase, headline trends over the
  history; every metric in a folded table.
* Thresholds: measured by A/A runs (one kernel against itself) per metric and runner kind where there are
  any, in RESULTS_DIR or the history; else --threshold.  The report prints which.
* Every run directory (hidden .tmp-* ones skipped), folded, with failed runs' errors and logs.

RESULTS_DIR (and each night of the history) is a directory of bundles, or a merged one with merge.json.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import InputError
from harness.results import stats
from harness.results.report import build_report


def cmd_report(args) -> int:
    out = Path(args.out) if args.out else Path(args.results_dir) / "report"
    if args.threshold < 0:
        raise InputError(f"--threshold must be >= 0, got {args.threshold}")
    history = Path(args.history) if args.history else None
    if history is not None and not history.is_dir():
        raise InputError(f"--history {history}: no such directory")
    index = build_report(Path(args.results_dir), out, threshold_pct=args.threshold, history_dir=history)
    print(f"report: {index} (and {index.parent / 'report.md'})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write an HTML + Markdown report of a results directory",
                              description=__doc__)
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="directory of result bundles")
    p.add_argument("--out", metavar="DIR", help="output directory (default RESULTS_DIR/report)")
    p.add_argument("--threshold", type=float, default=stats.DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help="flag only changes larger than PCT percent where no A/A run calibrated the metric "
                        "(default %(default)s)")
    p.add_argument("--history", metavar="DIR",
                   help="earlier nights, one results directory each, named to sort by date: trends, and tonight "
                        "judged against the last of them")
    p.set_defaults(func=cmd_report)
