"""`harness nightly MATRIX [--shards N]`: the CI workflow's sharded nightly on one machine (one shard by default).

The same steps as .github/workflows/nightly.yml, one after the other: plan, build every kernel of the plan
once, run each shard into its own directory, merge, report.  Layout under the night's directory::

    plan.json   shards/<id>/ (bundles + shard.json)   merged/ (bundles + merge.json)   report/
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.kernels.build import build_kernel
from harness.paths import REPO_ROOT
from harness.results.night_plan import describe_plan, make_plan
from harness.results.report import Entry, build_report
from harness.results.shard_merge import EXIT_INFRASTRUCTURE, merge_shards
from harness.results.shard_run import run_shard
from harness.results.shards import write_model


def run_sharded_nightly(matrix: Path, n_shards: int, night: Path, out: Path | None = None, junit: Path | None = None,
                        timing: str | None = None, require_accel: str | None = None,
                        history: Path | None = None, jobs: int | None = None) -> int:
    plan = make_plan(matrix, n_shards, [REPO_ROOT / "results"], timing=timing)
    for line in describe_plan(plan, n_shards):
        print(f"nightly: {line}", file=sys.stderr)
    night.mkdir(parents=True, exist_ok=True)
    write_model(night / "plan.json", plan)
    t0 = time.monotonic()
    for b in plan.builds:  # the workflow's build job: no shard builds a kernel
        build_kernel(b.spec)
    build_s = time.monotonic() - t0
    shard_dirs = []
    for shard in plan.shards:
        shard_dirs.append(night / "shards" / shard.id)
        record = run_shard(plan, shard.id, shard_dirs[-1], require_accel=require_accel, jobs=jobs)
        print(f"nightly: shard {shard.id}: {record.wall_s:.0f} s (planned about {shard.estimate_s:.0f} s)",
              file=sys.stderr)
    merge = merge_shards(shard_dirs, night / "merged")
    for p in merge.problems:
        print(f"nightly: infrastructure error: {p}", file=sys.stderr)
    merged = {c.id for c in merge.cells}
    no_bundle = [Entry(f"{c.id} ({c.scenario} on {', '.join(k.text for k in c.kernels)})", None,
                       problem=next((p for p in merge.problems if c.id in p), "no bundle"))
                 for c in plan.cells if c.id not in merged]
    if junit:
        from harness.results.junit import write_junit

        write_junit(junit, [night / "merged" / c.bundle for c in merge.cells],
                    extra_failures=[(e.name, e.problem) for e in no_bundle])
    index = build_report(night / "merged", out or night / "report", extra=no_bundle, history_dir=history)
    ok = sum(c.status == "complete" for c in merge.cells)
    print(f"nightly: {ok}/{len(plan.cells)} cell(s) ok in {len(plan.shards)} shard(s); kernels {build_s:.0f} s, "
          f"shards {merge.wall_s:.0f} s; merged: {night / 'merged'}; report: {index}")
    if merge.problems:
        return EXIT_INFRASTRUCTURE
    return 0 if ok == len(plan.cells) else 1
