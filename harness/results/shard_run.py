"""One shard of a nightly plan run on this machine (`harness run-shard`, `harness nightly`)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from harness.errors import InputError
from harness.guest.launch import choose_accel
from harness.kernels.build import build_key, is_built
from harness.machine import accel as accel_mod
from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.required_accel import check_required_accel
from harness.results.scenario_run import run_scenario
from harness.results.shards import SHARD_FILE, Plan, PlanShard, Runner, ShardCell, ShardRecord, write_model
from harness.results.writer import host_info, utc_now


def scenario_file(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def check_shard_inputs(plan: Plan, shard: PlanShard) -> None:
    """InputError before anything boots: a scenario changed since the plan, or a kernel not built."""
    for cell in (plan.cell(c) for c in shard.cells):
        path = scenario_file(cell.path)
        if not path.is_file():
            raise InputError(f"cell {cell.id}: scenario file not found: {path}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != cell.sha256:
            raise InputError(f"cell {cell.id}: {path} changed since the plan was made; make the plan again")
    for spec in shard.kernels:
        if spec.kind == "build" and not is_built(spec):
            raise InputError(f"shard {shard.id}: kernel {spec.text} (build key {build_key(spec)[:12]}) is not in the build "
                             "cache; a shard never builds: run `harness kernel build` for the plan's builds first")


def runner_fingerprint() -> Runner:
    host = host_info()
    return Runner(cpu=host.cpu, cores=host.cores, accelerator=choose_accel().accel, qemu_version=accel_mod.qemu_version(),
                  memory_mib=host.memory_mib, hostname=host.hostname)


def run_shard(plan: Plan, shard_id: str, results: Path, require_accel: str | None = None,
              jobs: int | None = None) -> ShardRecord:
    shard = plan.shard(shard_id)
    check_shard_inputs(plan, shard)
    check_required_accel(require_accel)
    results.mkdir(parents=True, exist_ok=True)
    if (results / SHARD_FILE).exists():
        raise InputError(f"{results}: already holds a shard ({SHARD_FILE}); give each shard its own directory")
    started, t0 = utc_now(), time.monotonic()
    cells = []
    for cell in (plan.cell(c) for c in shard.cells):
        t = time.monotonic()
        kernels = ", ".join(k.text for k in cell.kernels)
        print(f"run-shard {shard.id}: cell {cell.id} ({cell.scenario} on {kernels}, "
              f"{cell.reps} rep(s))", file=sys.stderr)
        try:
            outcome = run_scenario(scenario_file(cell.path), kernels=cell.kernels, reps=cell.reps,
                                   results_dir=results, timing=cell.timing, require_accel=require_accel,
                                   jobs=jobs)
            status = load_bundle(outcome.bundle).status
            cells.append(ShardCell(id=cell.id, bundle=outcome.bundle.name, status=status, error=outcome.error,
                                   wall_s=round(time.monotonic() - t, 1)))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 -- one broken cell must not stop the shard
            cells.append(ShardCell(id=cell.id, bundle=None, status="no bundle", error=f"{type(exc).__name__}: {exc}",
                                   wall_s=round(time.monotonic() - t, 1)))
        c = cells[-1]
        print(f"run-shard {shard.id}: {c.status} {c.id}: {c.bundle or c.error} ({c.wall_s:.0f} s)",
              file=sys.stderr)
    wall = round(time.monotonic() - t0, 1)
    runner = runner_fingerprint().model_copy(update={"wall_s": wall})
    record = ShardRecord(plan=plan, plan_digest=plan.digest(), shard=shard.id, runner=runner, started=started, ended=utc_now(),
                         wall_s=wall, cells=cells)
    write_model(results / SHARD_FILE, record)
    return record


