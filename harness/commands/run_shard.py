"""`harness run-shard PLAN --shard ID --results DIR`: run one shard of a plan (`harness plan`).

Each of the shard's cells runs as `harness run` would (all its kernels interleaved, one bundle), whatever
the others did.  DIR gets the bundles and shard.json: the plan's digest, this runner's fingerprint (CPU,
cores, accelerator, QEMU version), wall times, and per cell its bundle or why there is none.

Kernels are never built here: every built kernel the shard needs must already be in the build cache (the
plan's build job, or `harness kernel build SPEC`), else exit 2 before anything boots.  A scenario file
that changed since the plan was made is bad input too.  Exit 1 when any cell failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.options import add_jobs_option, add_require_accel_option
from harness.results.scenario_run import check_jobs
from harness.results.shard_run import run_shard
from harness.results.shards import SHARD_FILE, load_plan


def cmd_run_shard(args) -> int:
    check_jobs(args.jobs)
    plan = load_plan(Path(args.plan))
    record = run_shard(plan, args.shard, Path(args.results), require_accel=args.require_accel, jobs=args.jobs)
    ok = sum(c.status == "complete" for c in record.cells)
    print(f"run-shard {record.shard}: {ok}/{len(record.cells)} cell(s) complete in {record.wall_s:.0f} s; "
          f"{Path(args.results) / SHARD_FILE}")
    return 0 if ok == len(record.cells) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("run-shard", help="run one shard of a plan (harness plan) into its own directory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", metavar="PLAN_JSON", help="the plan written by harness plan --out")
    p.add_argument("--shard", required=True, metavar="ID", help="shard id from the plan (s1, s2, ...)")
    p.add_argument("--results", required=True, metavar="DIR", help="this shard's results directory")
    add_jobs_option(p)
    add_require_accel_option(p)
    p.set_defaults(func=cmd_run_shard)
