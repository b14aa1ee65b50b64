"""`harness nightly MATRIX_YAML`: run a matrix of scenarios and kernels, then build the report.

The matrix file is a YAML list of entries::

    - scenario: smoke.yaml        # path; relative paths are tried against the matrix file's
      kernels: [stock]            #   directory first, then the current directory
      reps: 3                     # optional, default: the scenario's own
                                  # kernels optional, default: the scenario's own
      timing: icount              # optional, default: --timing, else the scenario's own
      aa: true                    # optional: A/A calibration, one kernel against itself (its repetitions)

With --shards N it runs as the CI workflow does (harness plan, kernel builds, run-shard per shard, merge,
report): every shard into its own directory, one after the other on this machine.

Every entry runs even when others fail.  An entry whose scenario file is missing, or whose run
raises, is reported as a failed run without a bundle.  Exit status 1 when any run failed, 2 when the
matrix file is invalid.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.machine.config import TIMING_MODES
from harness.paths import REPO_ROOT
from harness.results.report import Entry, build_report

from .jobs_option import add_jobs_option, check_jobs
from .matrix import MatrixEntry, load_matrix
from .require_accel import add_require_accel_option, check_required_accel


@dataclass
class EntryResult:
    entry: MatrixEntry
    ok: bool
    bundle: Path | None  # None when the run produced no bundle
    reason: str = ""  # why there is no bundle

    def as_report_entry(self) -> Entry:
        return Entry(self.entry.label, None, problem=self.reason)


def run_matrix(entries: list[MatrixEntry], results_dir: Path, timing: str | None = None,
               require_accel: str | None = None, jobs: int | None = None) -> list[EntryResult]:
    """Run every entry, whatever the others did, printing one line each."""
    try:
        from harness.commands.run import (
            run_scenario,  # lazily: the run stage is heavy and optional here
        )
    except ImportError as exc:
        raise HarnessError(f"nightly: cannot import harness.commands.run: {exc}") from exc
    results = []
    for e in entries:
        if not e.path.is_file():
            results.append(EntryResult(e, False, None, f"scenario file not found: {e.path}"))
        else:
            try:
                outcome = run_scenario(e.path, kernels=e.kernels, reps=e.reps, results_dir=results_dir, junit=None,
                                       timing=e.timing or timing, require_accel=require_accel, jobs=jobs)
                results.append(EntryResult(e, bool(outcome.ok), Path(outcome.bundle)))
            except Exception as exc:  # noqa: BLE001 -- one broken entry must not stop the night
                results.append(EntryResult(e, False, None, f"{type(exc).__name__}: {exc}"))
        r = results[-1]
        what = r.bundle if r.bundle else r.reason
        print(f"nightly: {'ok' if r.ok else 'FAILED'} {e.label}: {what}", file=sys.stdout if r.ok else sys.stderr)
    return results


def cmd_nightly(args) -> int:
    matrix = Path(args.matrix)
    entries = load_matrix(matrix)
    history = Path(args.history) if args.history else None
    if history is not None and not history.is_dir():
        raise InputError(f"--history {history}: no such directory")
    check_required_accel(args.require_accel)
    check_jobs(args.jobs)
    if args.shards is not None:
        from .shard_night import run_sharded_nightly

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        night = Path(args.results) if args.results else REPO_ROOT / "results" / "nightly" / stamp
        return run_sharded_nightly(matrix, args.shards, night, out=Path(args.out) if args.out else None,
                                   junit=Path(args.junit) if args.junit else None, timing=args.timing,
                                   require_accel=args.require_accel, history=history, jobs=args.jobs)
    results_dir = Path(args.results) if args.results else REPO_ROOT / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else results_dir / "report"
    results = run_matrix(entries, results_dir, timing=args.timing, require_accel=args.require_accel, jobs=args.jobs)
    no_bundle = [r.as_report_entry() for r in results if r.bundle is None]
    if args.junit:
        from harness.results.junit import write_junit

        write_junit(Path(args.junit), [r.bundle for r in results if r.bundle],
                    extra_failures=[(e.name, e.problem) for e in no_bundle])
    index = build_report(results_dir, out, extra=no_bundle, history_dir=history)
    n_ok = sum(r.ok for r in results)
    print(f"nightly: {n_ok}/{len(results)} run(s) ok; report: {index}")
    return 0 if n_ok == len(results) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("nightly", help="run a matrix of scenarios and kernels, then build the report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matrix", metavar="MATRIX_YAML", help="matrix file, e.g. scenarios/nightly.yaml")
    p.add_argument("--results", metavar="DIR", help="results directory (default: the repository's results/)")
    p.add_argument("--out", metavar="DIR", help="report directory (default RESULTS/report)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML of every run")
    p.add_argument("--timing", choices=TIMING_MODES,
                   help="guest time for every run: realtime, or icount (TCG only); default: each scenario's own")
    p.add_argument("--history", metavar="DIR",
                   help="earlier nights' results, one directory each (e.g. restored from the last run's artifact): "
                        "trends in the report, and tonight judged against the last night")
    p.add_argument("--shards", type=int, metavar="N",
                   help="as CI does: plan N shards, build their kernels, run each shard into its own directory "
                        "under RESULTS (default results/nightly/<UTC time>), merge into RESULTS/merged, report")
    add_jobs_option(p)
    add_require_accel_option(p)
    p.set_defaults(func=cmd_nightly)
