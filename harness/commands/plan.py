"""`harness plan MATRIX_YAML --shards N`: split a nightly matrix into N shards balanced by expected duration.

Each matrix entry is a *cell*: one scenario on all of its kernels, which one shard runs interleaved into one
bundle (a comparison group is never split across runners).  A cell's expected duration is the median
wall time per kernel-repetition of earlier complete bundles of the same scenario and timing (under
--history, default the repository's results/), else a default it prints.  Cells go, longest first, to the
shard with the least expected work.  The plan lists the kernels to build once before any shard runs,
with their build cache keys, and per shard the keys it needs.  Exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.commands.options import add_timing_option
from harness.paths import REPO_ROOT
from harness.results.night_plan import describe_plan, make_plan
from harness.results.shards import write_model


def cmd_plan(args) -> int:
    history = [Path(h) for h in args.history] if args.history else [REPO_ROOT / "results"]
    plan = make_plan(Path(args.matrix), args.shards, history, timing=args.timing)
    for line in describe_plan(plan, args.shards):
        print(line, file=sys.stderr)
    if args.out:
        write_model(Path(args.out), plan)
        print(args.out)
    else:
        json.dump(plan.model_dump(mode="json", by_alias=True), sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="split a nightly matrix into shards balanced by expected duration",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matrix", metavar="MATRIX_YAML", help="matrix file, e.g. scenarios/nightly.yaml")
    p.add_argument("--shards", type=int, required=True, metavar="N", help="how many shards (runners)")
    p.add_argument("--out", metavar="FILE", help="write the plan here (default: print it)")
    p.add_argument("--history", action="append", metavar="DIR",
                   help="earlier bundles to estimate durations from (repeatable; default the repository's results/)")
    add_timing_option(p, help="guest time for every cell that does not set its own; default: each scenario's own")
    p.set_defaults(func=cmd_plan)
