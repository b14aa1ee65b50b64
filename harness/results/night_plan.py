"""A nightly matrix split into shards balanced by expected duration (`harness plan`, `harness nightly`)."""

from __future__ import annotations

import hashlib
import json
import statistics
from datetime import datetime
from pathlib import Path

from harness.errors import InputError
from harness.kernels.build import build_key
from harness.kernels.resolve import check_available
from harness.kernels.spec import KernelSpec
from harness.numbers import fmt_num
from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.matrix import MatrixEntry, load_matrix
from harness.results.metrics import check_expectation_metrics
from harness.results.shards import Plan, PlanBuild, PlanCell, PlanShard
from harness.results.writer import utc_now
from harness.scenario.expectations import check_kernel_names
from harness.scenario.schema import Scenario, load_scenario

# Seconds per kernel-repetition (a boot and the scenario's steps) when no earlier bundle says better:
# warm smoke on stock measures 31-39 s under TCG in real time; icount takes about twice the wall time.
DEFAULT_S_PER_KERNEL_REP = {"realtime": 40.0, "icount": 80.0}


def repo_relative(path: Path) -> str:
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def history_rates(dirs: list[Path]) -> dict[tuple[str, str], list[float]]:
    """(scenario, timing) -> wall seconds per kernel-repetition of every complete bundle under `dirs`."""
    rates: dict[tuple[str, str], list[float]] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for manifest in sorted(d.rglob("manifest.json")):
            try:
                b = load_bundle(manifest.parent)
            except InputError:
                continue
            seconds = _seconds(b.manifest.started, b.manifest.ended)
            n = len(b.manifest.kernels) * (b.manifest.reps or 0)
            if b.status == "complete" and seconds and n:
                rates.setdefault((b.scenario, b.timing), []).append(seconds / n)
    return rates


def _cell_id(scenario: Scenario, path: str, kernels: list[KernelSpec], reps: int, timing: str | None, aa: bool) -> str:
    what = json.dumps([path, [k.text for k in kernels], reps, timing, aa])
    return f"{scenario.name}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"


def make_cell(entry: MatrixEntry, matrix: Path, timing: str | None,
              rates: dict[tuple[str, str], list[float]]) -> PlanCell:
    if not entry.path.is_file():
        raise InputError(f"{matrix}: entry {entry.index}: scenario file not found: {entry.path}")
    scenario = load_scenario(entry.path)
    kernels = entry.kernels or scenario.kernels
    for k in kernels:
        try:
            check_available(k)
        except InputError as exc:
            raise InputError(f"{matrix}: entry {entry.index}: {exc}") from None
    check_kernel_names(scenario, kernels)  # what `harness run` checks too: bad input before any shard boots
    check_expectation_metrics(scenario)
    reps = entry.reps or scenario.repetitions
    timing = entry.timing or timing
    effective = timing or scenario.qemu.timing
    path = repo_relative(entry.path)
    seen = rates.get((scenario.name, effective))
    per = statistics.median(seen) if seen else DEFAULT_S_PER_KERNEL_REP[effective]
    return PlanCell(id=_cell_id(scenario, path, kernels, reps, timing, entry.aa), scenario=scenario.name, path=path,
                    sha256=hashlib.sha256(entry.path.read_bytes()).hexdigest(), kernels=kernels, reps=reps,
                    timing=timing, aa=entry.aa, estimate_s=round(per * len(kernels) * reps, 1),
                    estimate_from="bundles" if seen else "default")


def balance(cells: list[PlanCell], n: int) -> list[list[PlanCell]]:
    """Longest expected cell first, each onto the shard with the least expected work (ties: the lower id)."""
    shards: list[list[PlanCell]] = [[] for _ in range(n)]
    load = [0.0] * n
    for cell in sorted(cells, key=lambda c: (-c.estimate_s, c.id)):
        i = min(range(n), key=lambda j: (load[j], j))
        shards[i].append(cell)
        load[i] += cell.estimate_s
    return shards


def make_plan(matrix: Path, n_shards: int, history: list[Path], timing: str | None = None) -> Plan:
    if n_shards < 1:
        raise InputError(f"--shards must be at least 1, got {n_shards}")
    entries = load_matrix(matrix)
    rates = history_rates(history)
    cells = [make_cell(e, matrix, timing, rates) for e in entries]
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"{matrix}: the same cell is listed twice: {', '.join(twice)}")
    specs = {k.text: k for c in cells for k in c.kernels}
    keys = {text: build_key(spec) for text, spec in sorted(specs.items()) if spec.kind == "build"}
    shards = []
    for i, group in enumerate(balance(cells, min(n_shards, len(cells))), start=1):
        kernels = [specs[k] for k in sorted({k.text for c in group for k in c.kernels})]
        shards.append(PlanShard(id=f"s{i}", cells=[c.id for c in group],
                                estimate_s=round(sum(c.estimate_s for c in group), 1), kernels=kernels,
                                build_keys=sorted({keys[k.text] for k in kernels if k.text in keys})))
    builds = [PlanBuild(spec=specs[k], key=v) for k, v in keys.items()]
    builds_key = hashlib.sha256(" ".join(sorted(set(keys.values()))).encode()).hexdigest()
    return Plan(matrix=repo_relative(matrix), created=utc_now(), shards=shards, cells=cells, builds=builds,
                builds_key=builds_key)


def describe_plan(plan: Plan, requested: int) -> list[str]:
    lines = []
    if len(plan.shards) < requested:
        lines.append(f"plan: {len(plan.cells)} cell(s) make {len(plan.shards)} shard(s), not {requested}")
    for c in plan.cells:
        if c.estimate_from == "default":
            lines.append(f"plan: {c.id}: no earlier bundle of {c.scenario}; estimated "
                         f"{fmt_num(c.estimate_s)} s ({c.estimate_s / (len(c.kernels) * c.reps):.0f} s per "
                         "kernel-repetition)")
    for s in plan.shards:
        lines.append(f"plan: shard {s.id}: {len(s.cells)} cell(s), about {fmt_num(s.estimate_s)} s: "
                     f"{', '.join(s.cells)}")
    lines.append(f"plan: kernels to build: {', '.join(b.spec.text for b in plan.builds) or 'none'}")
    return lines


