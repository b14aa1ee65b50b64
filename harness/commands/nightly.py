"""`harness nightly MATRIX_YAML`: run a matrix of scenarios and kernels, then build the report.

The matrix file is a YAML list of entries::

    - scenario: smoke.yaml        # path; relative paths are tried against the matrix file's
      kernels: [stock]            #   directory first, then the current directory
      reps: 3                     # optional, default: the scenario's own
                                  # kernels optional, default: the scenario's own
      timing: icount              # optional, default: --timing, else the scenario's own
      aa: true                    # optional: A/A calibration, one kernel against itself (its repetitions)

It always runs as the CI workflow does (harness plan, kernel builds, run-shard per shard, merge, report),
every shard into its own directory under RESULTS, one after the other on this machine: --shards N splits
the matrix into N shards, without it the whole matrix is one shard.  So every night, sharded or not, has
the same layout and the same merge.json, whose A/A cells (`aa: true`) calibrate the report's thresholds.

A matrix that names a missing scenario file, an unknown kernel or series, or a bad scenario is bad input
(exit 2) before anything boots.  Every cell runs even when others fail; exit 1 when any run failed, 3 when
the merge finds a planned cell missing (an infrastructure error).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.commands.options import add_jobs_option, add_require_accel_option, add_timing_option
from harness.errors import InputError
from harness.paths import REPO_ROOT
from harness.results.matrix import load_matrix
from harness.results.required_accel import check_required_accel
from harness.results.scenario_run import check_jobs


def cmd_nightly(args) -> int:
    matrix = Path(args.matrix)
    load_matrix(matrix)
    history = Path(args.history) if args.history else None
    if history is not None and not history.is_dir():
        raise InputError(f"--history {history}: no such directory")
    check_required_accel(args.require_accel)
    check_jobs(args.jobs)
    from harness.results.nightly_run import run_sharded_nightly  # lazily: the run stage is heavy

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    night = Path(args.results) if args.results else REPO_ROOT / "results" / "nightly" / stamp
    return run_sharded_nightly(matrix, 1 if args.shards is None else args.shards, night,
                               out=Path(args.out) if args.out else None,
                               junit=Path(args.junit) if args.junit else None, timing=args.timing,
                               require_accel=args.require_accel, history=history, jobs=args.jobs)


def register(subparsers) -> None:
    p = subparsers.add_parser("nightly", help="run a matrix of scenarios and kernels, then build the report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matrix", metavar="MATRIX_YAML", help="matrix file, e.g. scenarios/nightly.yaml")
    p.add_argument("--results", metavar="DIR",
                   help="the night's directory: plan.json, shards/<id>/, merged/, report/ (default "
                        "results/nightly/<UTC time>)")
    p.add_argument("--out", metavar="DIR", help="report directory (default RESULTS/report)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML of every run")
    add_timing_option(p, help="guest time for every run: realtime, or icount (TCG only); default: each scenario's own")
    p.add_argument("--history", metavar="DIR",
                   help="earlier nights' results, one directory each (e.g. restored from the last run's artifact): "
                        "trends in the report, and tonight judged against the last night")
    p.add_argument("--shards", type=int, metavar="N",
                   help="plan N shards (default 1), build their kernels, run each shard into its own directory "
                        "under RESULTS, merge into RESULTS/merged, report")
    add_jobs_option(p)
    add_require_accel_option(p)
    p.set_defaults(func=cmd_nightly)
