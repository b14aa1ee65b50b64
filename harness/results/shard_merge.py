"""The shards' results merged into one directory with merge.json (`harness merge`, `harness nightly`)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from harness.errors import InputError
from harness.results.bundle import load_bundle
from harness.results.shards import (
    MERGE_FILE,
    SHARD_FILE,
    Merge,
    MergedCell,
    Plan,
    Runner,
    ShardRecord,
    read_model,
    write_model,
)
from harness.results.writer import utc_now

EXIT_INFRASTRUCTURE = 3


def load_shards(dirs: list[Path]) -> tuple[list[tuple[Path, ShardRecord]], list[str]]:
    shards, problems = [], []
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"{d}: no such directory")
        if not (d / SHARD_FILE).is_file():
            problems.append(f"{d}: no {SHARD_FILE}: the shard did not finish (its cells count as missing)")
            continue
        shards.append((d, read_model(d / SHARD_FILE, ShardRecord, f"{SHARD_FILE} (harness run-shard)")))
    return shards, problems


def copy_bundle(src: Path, out: Path, shard_id: str) -> str:
    """Copy a bundle directory into out unchanged; a name another shard took gets the shard's id appended."""
    name = src.name
    if (out / name).exists():
        name = f"{name}-{shard_id}"
    shutil.copytree(src, out / name, symlinks=True)
    return name


def merge_shards(dirs: list[Path], out: Path) -> Merge:
    shards, problems = load_shards(dirs)
    if not shards:
        raise InputError(f"no shard results among {', '.join(map(str, dirs))} (each needs {SHARD_FILE})")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: not empty; merge into a new directory")
    plan: Plan = shards[0][1].plan
    digest = plan.digest()
    out.mkdir(parents=True, exist_ok=True)
    cells, runners = [], {}
    accounted: set[str] = set()  # cells a problem already names
    planned = {c.id for c in plan.cells}
    for d, rec in shards:
        if rec.plan_digest != digest or rec.plan.digest() != digest:
            problems.append(f"{d}: shard {rec.shard} ran another plan than {shards[0][0]}'s; left out")
            continue
        if rec.shard in runners:
            problems.append(f"{d}: shard {rec.shard} is given twice")
        runners[rec.shard] = rec.runner
        for sc in rec.cells:
            if sc.id not in planned:
                problems.append(f"{d}: cell {sc.id} is not in the plan; left out")
            elif sc.bundle is None:
                problems.append(f"cell {sc.id} (shard {rec.shard}) left no bundle: {sc.error}")
                accounted.add(sc.id)
            elif not (d / sc.bundle / "manifest.json").is_file():
                problems.append(f"cell {sc.id} (shard {rec.shard}): bundle {d / sc.bundle} is missing")
                accounted.add(sc.id)
            else:
                bundle = load_bundle(d / sc.bundle)
                ran_on = Runner.of_manifest(bundle.manifest)
                if bundle.manifest.accel and not ran_on.same_machine(rec.runner):
                    problems.append(f"cell {sc.id}: its bundle ran on {ran_on.cpu}/{ran_on.accelerator}, not on "
                                    f"shard {rec.shard}'s runner")
                planned_cell = plan.cell(sc.id)
                kernels = [k.text for k in planned_cell.kernels]
                cells.append(MergedCell(id=sc.id, scenario=planned_cell.scenario, kernels=kernels,
                                        shard=rec.shard, bundle=copy_bundle(d / sc.bundle, out, rec.shard),
                                        aa=planned_cell.aa, status=bundle.status))
    counts = Counter(c.id for c in cells)
    for c in plan.cells:
        if counts[c.id] == 0 and c.id not in accounted:
            owner = next((s.id for s in plan.shards if c.id in s.cells), "?")
            problems.append(f"cell {c.id} ({c.scenario}, planned on shard {owner}) is missing: no shard ran it")
        elif counts[c.id] > 1:
            where = ", ".join(m.shard for m in cells if m.id == c.id)
            problems.append(f"cell {c.id} ({c.scenario}) is present {counts[c.id]} times (shards {where})")
    wall = sum(r.wall_s or 0 for r in runners.values())
    merge = Merge(plan=plan, cells=cells, runners=runners, merged_at=utc_now(), wall_s=round(wall, 1),
                  problems=problems)
    write_model(out / MERGE_FILE, merge)
    return merge


def shard_table(merge: Merge) -> str:
    """Markdown: per shard its cells, the plan's estimate and the wall time it took, and the runner."""
    plan = merge.plan
    timings = sorted({c.timing or "scenario's own" for c in plan.cells})
    lines = [f"`{plan.matrix}`, merged {merge.merged_at[:10]}, {len(plan.cells)} cell(s) in {len(plan.shards)} "
             f"shard(s), timing {', '.join(timings)} (`harness merge --table`)", "",
             "| shard | cells (kernels x repetitions) | planned s | wall s | runner |", "|---|---|---:|---:|---|"]
    for s in plan.shards:
        r = merge.runners.get(s.id)
        cells = ", ".join(f"{c} ({len(plan.cell(c).kernels)}x{plan.cell(c).reps}{', A/A' if plan.cell(c).aa else ''})"
                          for c in s.cells)
        runner = f"{r.cpu}, {r.cores} cores, {r.accelerator}, QEMU {r.qemu_version}" if r else "did not finish"
        wall = f"{r.wall_s:.0f}" if r and r.wall_s is not None else "-"
        lines.append(f"| {s.id} | {cells} | {s.estimate_s:.0f} | {wall} | {runner} |")
    longest = max((r.wall_s or 0 for r in merge.runners.values()), default=0)
    lines.append(f"| all | {len(plan.cells)} | {sum(s.estimate_s for s in plan.shards):.0f} | "
                 f"{merge.wall_s or 0:.0f} (longest shard {longest:.0f}) | |")
    return "\n".join(lines) + "\n"


