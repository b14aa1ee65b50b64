"""`harness report RESULTS_DIR --out DIR`: a static HTML report (index.html) and the same as report.md.

* An index of every run directory in RESULTS_DIR (hidden .tmp-* ones skipped): status, scenario,
  kernels, accelerator, start time; failed runs with their error and links to their serial.log and
  transcript.log; directories that are not readable bundles with the reason.
* Per scenario (its latest bundle with metrics, whatever its status): the median of each
  metric per kernel side by side, with the changes flagged against the first kernel (same rules as
  `harness compare`), and PNG plots: host RSS over time, fault-in time distribution, zeroing counters.
"""

from __future__ import annotations

from pathlib import Path

from harness.results import stats
from harness.results.report import build_report


def cmd_report(args) -> int:
    out = Path(args.out) if args.out else Path(args.results_dir) / "report"
    index = build_report(Path(args.results_dir), out, threshold_pct=args.threshold)
    print(f"report: {index} (and {index.parent / 'report.md'})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write an HTML + Markdown report of a results directory",
                              description=__doc__)
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="directory of result bundles")
    p.add_argument("--out", metavar="DIR", help="output directory (default RESULTS_DIR/report)")
    p.add_argument("--threshold", type=float, default=stats.DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help="flag only changes larger than PCT percent (default %(default)s)")
    p.set_defaults(func=cmd_report)
