"""`harness plan`, `run-shard` and `merge` without booting: balancing, stable ids, the build keys a shard
needs, bad input (exit 2), and merge's infrastructure errors (exit 3) on synthetic shard directories."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import bundle_synth as synth
import pytest

from harness.kernels.build import build_key
from harness.kernels.spec import parse_kernel_spec
from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.compare import run_compare
from harness.results.night_plan import balance, make_plan
from harness.results.report import build_report
from harness.results.shard_merge import EXIT_INFRASTRUCTURE, merge_shards
from harness.results.shards import SHARD_FILE, PlanCell, Runner, ShardCell, ShardRecord, load_merge, write_model

SMOKE = REPO_ROOT / "scenarios" / "smoke.yaml"
RUNNER = Runner(cpu="Intel(R) Xeon(R) CPU", cores=4, accelerator="kvm", qemu_version="8.2.2", wall_s=10.0)


def harness(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


def write_matrix(path: Path, entries: list[str]) -> Path:
    path.write_text("".join(f"- scenario: {SMOKE}\n  {e}\n" for e in entries))
    return path


MATRIX = ["kernels: [stock, base]\n  reps: 3", "kernels: [stock]\n  reps: 1", "kernels: [base]\n  reps: 2\n  aa: true"]


def cell(cid: str, estimate: float) -> PlanCell:
    return PlanCell(id=cid, scenario="s", path="s.yaml", sha256="0", kernels=["stock"], reps=1, estimate_s=estimate,
                    estimate_from="default")


def test_balance_puts_the_longest_cells_first_on_the_least_loaded_shard():
    shards = balance([cell("a", 100), cell("b", 300), cell("c", 200), cell("d", 100)], 2)
    assert [[c.id for c in s] for s in shards] == [["b", "d"], ["c", "a"]]
    assert [sum(c.estimate_s for c in s) for s in shards] == [400, 300]


def test_plan_cells_are_comparison_groups_with_stable_ids(tmp_path):
    plan = make_plan(write_matrix(tmp_path / "m.yaml", MATRIX), 2, [])
    again = make_plan(write_matrix(tmp_path / "reordered.yaml", MATRIX[::-1]), 2, [])
    assert sorted(c.id for c in plan.cells) == sorted(c.id for c in again.cells)
    assert {s.id: s.cells for s in plan.shards} == {s.id: s.cells for s in again.shards}
    assigned = [c for s in plan.shards for c in s.cells]
    assert sorted(assigned) == sorted(c.id for c in plan.cells)  # every cell on exactly one shard, whole
    base_key = build_key(parse_kernel_spec("base"))
    assert [(b.spec.text, b.key) for b in plan.builds] == [("base", base_key)]
    for s in plan.shards:
        kernels = {k.text for c in s.cells for k in plan.cell(c).kernels}
        assert {k.text for k in s.kernels} == kernels and s.build_keys == ([base_key] if "base" in kernels else [])
    aa = [c for c in plan.cells if c.aa]
    assert len(aa) == 1 and [k.text for k in aa[0].kernels] == ["base"]
    # 3 x 2 kernel-repetitions at the default estimate against 1 + 2: the big cell gets a shard of its own.
    big = next(c for c in plan.cells if c.reps == 3)
    assert [big.id] in [s.cells for s in plan.shards]


def test_plan_estimates_from_earlier_bundles(tmp_path):
    synth.write_bundle(tmp_path / "hist" / "b1", {"stock": {("fault_in_ms", "touch"): [1]}}, scenario="smoke",
                       started="2026-11-22T01:00:00+00:00", reps=2)
    manifest = json.loads((tmp_path / "hist/b1/manifest.json").read_text())
    manifest["ended"] = "2026-11-22T01:01:00+00:00"  # 60 s for 2 kernel-repetitions
    (tmp_path / "hist/b1/manifest.json").write_text(json.dumps(manifest))
    plan = make_plan(write_matrix(tmp_path / "m.yaml", ["kernels: [stock]\n  reps: 4"]), 1, [tmp_path / "hist"])
    (c,) = plan.cells
    assert (c.estimate_from, c.estimate_s) == ("bundles", 120.0)


@pytest.mark.parametrize("args, entries, words", [
    (["--shards", "0"], MATRIX, "--shards must be at least 1"),
    (["--shards", "2"], ["kernels: [stock, base]\n  aa: true"], "an A/A entry names exactly one kernel"),
    (["--shards", "2"], ["kernels: [stock]", "kernels: [stock]"], "the same cell is listed twice"),
    (["--shards", "2"], ["kernels: [base+no-such-series]"], "entry 0: kernel spec 'base+no-such-series': patch "
                                                            "series 'no-such-series'"),
    (["--shards", "1"], ["kernels: [stock]\n  reps: 5000"], "entry 0: key 'reps': must be at most 1000, got 5000"),
])
def test_plan_bad_input_is_one_line_and_exit_2(tmp_path, args, entries, words):
    proc = harness("plan", write_matrix(tmp_path / "m.yaml", entries), *args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr


def test_run_shard_refuses_a_kernel_not_in_the_build_cache_and_a_changed_scenario(tmp_path):
    import os

    plan = make_plan(write_matrix(tmp_path / "m.yaml", MATRIX), 1, [])
    write_model(tmp_path / "plan.json", plan)
    empty_cache = dict(os.environ, BALLOON_TESTBED_CACHE=str(tmp_path / "cache"))
    proc = harness("run-shard", tmp_path / "plan.json", "--shard", "s1", "--results", tmp_path / "r", env=empty_cache)
    assert proc.returncode == 2 and "not in the build cache" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    stale = plan.model_copy(update={"cells": [c.model_copy(update={"sha256": "0" * 64}) for c in plan.cells]})
    write_model(tmp_path / "stale.json", stale)
    proc = harness("run-shard", tmp_path / "stale.json", "--shard", "s1", "--results", tmp_path / "r")
    assert proc.returncode == 2 and "changed since the plan was made" in proc.stderr, proc.stderr
    proc = harness("run-shard", tmp_path / "plan.json", "--shard", "s9", "--results", tmp_path / "r")
    assert proc.returncode == 2 and "no shard 's9'" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------ merge


def shard_dir(root: Path, plan, shard_id: str, runner: Runner = RUNNER, skip: tuple[str, ...] = ()) -> Path:
    """A shard's results as run-shard leaves them, with synthetic bundles."""
    d = root / shard_id
    cells = []
    for cid in plan.shard(shard_id).cells:
        if cid in skip:
            continue
        c = plan.cell(cid)
        kernels = [k.text for k in c.kernels]
        name = f"20261122T01000{len(cells)}Z-{c.scenario}-{'_vs_'.join(kernels)}"
        synth.write_bundle(d / name, {k: {("vmstat.pgfault", "touch"): [100 + i] * c.reps}
                                      for i, k in enumerate(kernels)}, accel=runner.accelerator,
                           qemu=runner.qemu_version, cpu=runner.cpu)
        cells.append(ShardCell(id=cid, bundle=name, status="complete", wall_s=5.0))
    write_model(d / SHARD_FILE, ShardRecord(plan=plan, plan_digest=plan.digest(), shard=shard_id, runner=runner,
                                            started="2026-11-22T01:00:00+00:00", ended="2026-11-22T01:00:10+00:00",
                                            wall_s=10.0, cells=cells))
    return d


@pytest.fixture
def plan(tmp_path):
    return make_plan(write_matrix(tmp_path / "m.yaml", MATRIX), 2, [])


def test_merge_keeps_every_bundle_and_records_cells_and_runners(tmp_path, plan):
    other = RUNNER.model_copy(update={"cpu": "AMD EPYC"})
    dirs = [shard_dir(tmp_path / "shards", plan, "s1"), shard_dir(tmp_path / "shards", plan, "s2", runner=other)]
    proc = harness("merge", *dirs, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    merge = load_merge(tmp_path / "out")
    assert merge is not None and not merge.problems
    assert sorted(c.id for c in merge.cells) == sorted(c.id for c in plan.cells)
    assert merge.runners["s1"].cpu == RUNNER.cpu and merge.runners["s2"].cpu == "AMD EPYC"
    for c in merge.cells:
        src = tmp_path / "shards" / c.shard / c.bundle
        assert not filecmp.dircmp(src, tmp_path / "out" / c.bundle).diff_files
        assert c.kernels == [k.text for k in plan.cell(c.id).kernels] and c.aa == plan.cell(c.id).aa
    raw = json.loads((tmp_path / "out/merge.json").read_text())
    assert {"plan", "cells", "runners", "merged_at"} <= raw.keys()
    assert {"cpu", "cores", "accelerator", "qemu_version"} <= raw["runners"]["s1"].keys()
    table = harness("merge", "--table", tmp_path / "out")
    assert table.returncode == 0 and "| s1 |" in table.stdout and "| s2 |" in table.stdout, table.stderr
    # The merged directory reads like any results directory.
    build_report(tmp_path / "out", tmp_path / "report")
    assert (tmp_path / "report/index.html").is_file()
    pair = next(c for c in merge.cells if len(c.kernels) == 2)
    assert run_compare(load_bundle(tmp_path / "out" / pair.bundle), None, 5.0)


def test_a_missing_cell_is_an_infrastructure_error(tmp_path, plan):
    s2_cell = plan.shard("s2").cells[0]
    dirs = [shard_dir(tmp_path / "shards", plan, "s1"), shard_dir(tmp_path / "shards", plan, "s2", skip=(s2_cell,))]
    proc = harness("merge", *dirs, "--out", tmp_path / "out")
    assert proc.returncode == EXIT_INFRASTRUCTURE, proc.stderr
    assert f"infrastructure error: cell {s2_cell} (smoke, planned on shard s2) is missing" in proc.stderr
    assert load_merge(tmp_path / "out").problems


def test_a_shard_given_twice_duplicates_its_cells(tmp_path, plan):
    s1 = shard_dir(tmp_path / "shards", plan, "s1")
    merge = merge_shards([s1, s1, shard_dir(tmp_path / "shards", plan, "s2")], tmp_path / "out")
    dup = plan.shard("s1").cells[0]
    assert any("shard s1 is given twice" in p for p in merge.problems)
    assert any(f"cell {dup} (smoke) is present 2 times" in p for p in merge.problems)


def test_a_shard_that_did_not_finish_and_a_bundle_from_another_machine(tmp_path, plan):
    s1 = shard_dir(tmp_path / "shards", plan, "s1")
    s2 = shard_dir(tmp_path / "shards", plan, "s2")
    (s2 / SHARD_FILE).unlink()
    record = json.loads((s1 / SHARD_FILE).read_text())
    record["runner"]["cpu"] = "something else"
    (s1 / SHARD_FILE).write_text(json.dumps(record))
    merge = merge_shards([s1, s2], tmp_path / "out")
    assert any("no shard.json: the shard did not finish" in p for p in merge.problems)
    assert any("not on shard s1's runner" in p for p in merge.problems)
    assert any("planned on shard s2) is missing" in p for p in merge.problems)


def test_merge_bad_input(tmp_path, plan):
    s1 = shard_dir(tmp_path / "shards", plan, "s1")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("")
    proc = harness("merge", s1, "--out", tmp_path / "full")
    assert proc.returncode == 2 and "not empty" in proc.stderr, proc.stderr
    proc = harness("merge", tmp_path / "nope", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "no such directory" in proc.stderr, proc.stderr


def test_the_shipped_small_matrix_is_valid():
    from harness.results.matrix import load_matrix

    entries = load_matrix(REPO_ROOT / "scenarios" / "nightly-small.yaml")
    assert [([k.text for k in e.kernels], e.aa) for e in entries] == [(["base", "base+zeroing-stats"], False), (["base"], True)]
