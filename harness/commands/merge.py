"""`harness merge SHARD_DIR... --out DIR`: merge the shards' results (`harness run-shard`) into one directory.

DIR gets every shard's bundle directories unchanged (`harness report DIR` and `harness compare DIR/BUNDLE`
read them as always) and merge.json: the plan, per planned cell its shard and bundle, and per shard the
runner it ran on (CPU, cores, accelerator, QEMU version, wall time).

Every planned cell must be present exactly once.  A cell that is missing (a shard job died, a run left no
bundle) or present twice, a shard of another plan, or a bundle that ran on another machine than its shard
says, is an *infrastructure* error, not a regression: each is printed, listed in merge.json's `problems`,
and the exit status is 3.  Otherwise: 0 when every cell's run completed, 1 when a run failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import InputError
from harness.results.shard_merge import EXIT_INFRASTRUCTURE, merge_shards, shard_table
from harness.results.shards import MERGE_FILE, load_merge


def cmd_merge(args) -> int:
    if args.table:
        merge = load_merge(Path(args.table))
        if merge is None:
            raise InputError(f"{args.table}: no {MERGE_FILE}: not a merged directory")
        sys.stdout.write(shard_table(merge))
        return 0
    if not args.shard_dirs or not args.out:
        raise InputError("merge: give the shards' directories and --out DIR (or --table MERGED_DIR)")
    out = Path(args.out)
    merge = merge_shards([Path(d) for d in args.shard_dirs], out)
    for p in merge.problems:
        print(f"merge: infrastructure error: {p}", file=sys.stderr)
    failed = [c for c in merge.cells if c.status != "complete"]
    for c in failed:
        print(f"merge: cell {c.id} ({c.scenario}) run {c.status}: {out / c.bundle}", file=sys.stderr)
    for shard_id, r in sorted(merge.runners.items()):
        print(f"merge: shard {shard_id}: {r.wall_s:.0f} s on {r.cpu}, {r.cores} cores, {r.accelerator}, "
              f"QEMU {r.qemu_version}")
    print(f"merge: {len(merge.cells)}/{len(merge.plan.cells)} planned cell(s) in {out / MERGE_FILE}")
    if merge.problems:
        return EXIT_INFRASTRUCTURE
    return 1 if failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("merge", help="merge shards' results (harness run-shard) into one directory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shard_dirs", nargs="*", metavar="SHARD_DIR", help="a shard's results directory (repeatable)")
    p.add_argument("--out", metavar="DIR", help="the merged directory (new or empty)")
    p.add_argument("--table", metavar="MERGED_DIR",
                   help="only print a merged directory's shards as Markdown: cells, planned and wall time, runner")
    p.set_defaults(func=cmd_merge)
