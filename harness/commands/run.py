"""`harness run`: a scenario on one or more kernels, several repetitions, into one result bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.commands.options import add_jobs_option, add_require_accel_option, add_timing_option
from harness.kernels.spec import parse_kernel_spec
from harness.results.scenario_run import DEFAULT_RESULTS, run_scenario
from harness.scenario.saved_boot import REPETITIONS_FROM


def cmd_run(args: argparse.Namespace) -> int:
    outcome = run_scenario(args.scenario, kernels=args.kernel, reps=args.reps,
                           results_dir=Path(args.results) if args.results else None,
                           junit=Path(args.junit) if args.junit else None, timing=args.timing,
                           require_accel=args.require_accel, jobs=args.jobs,
                           repetitions_from=args.repetitions_from)
    print(outcome.bundle)
    sys.stdout.flush()
    return 0 if outcome.ok else 1


def register(sub) -> None:
    p = sub.add_parser("run", help="run a scenario and write a result bundle")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--kernel", action="append", type=parse_kernel_spec,
                   help="kernel spec (repeatable); overrides the scenario's kernels")
    p.add_argument("--reps", type=int, help="repetitions per kernel (overrides the scenario)")
    p.add_argument("--repetitions-from", choices=REPETITIONS_FROM,
                   help="boot: every repetition boots; snapshot: each kernel boots once and its other repetitions "
                        "start from the saved booted guest (overrides the scenario's repetitions_from)")
    p.add_argument("--results", help=f"results directory (default {DEFAULT_RESULTS})")
    p.add_argument("--junit", help="also write JUnit XML with one test case per expectation")
    add_timing_option(p)
    add_jobs_option(p)
    add_require_accel_option(p)
    p.set_defaults(func=cmd_run)


