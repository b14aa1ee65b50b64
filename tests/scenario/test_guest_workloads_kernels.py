"""On real guests (make test-kernels): the mm selftests of base and of every seed stack, the gate that flags a
series breaking a selftest, and the stress scenario.

A test-only series (tests/data/series/map-fixed-noreplace-break) lets MAP_FIXED_NOREPLACE replace a mapping:
the map_fixed_noreplace selftest must fail on it and `harness compare` must call that a regression."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.scenario_run import run_scenario
from harness.results.selftests import FAIL, PASS, kernel_cases, outcomes
from harness.scenario.schema import load_scenario

pytestmark = pytest.mark.kernels

BREAK = "base+map-fixed-noreplace-break"



def test_mm_selftests_run_on_base_and_every_seed_stack(tmp_path):
    scenario = REPO_ROOT / "scenarios" / "mm-selftests.yaml"
    outcome = run_scenario(scenario, results_dir=tmp_path)
    assert outcome.status == "complete", outcome.error
    b = load_bundle(outcome.bundle)
    assert b.kernels == [k.text for k in load_scenario(scenario).kernels]
    for kernel in b.kernels:
        cases = kernel_cases(b, kernel)
        assert sum(c.result == PASS for _, c in cases) > 300, kernel
        assert not [c for _, c in cases if c.result == FAIL], kernel
        skipped = {c.test: c.reason for _, c in cases if c.test == c.case and c.result == "skip"}
        assert skipped["hugepage-mmap"].startswith("needs hugetlb pages")
        assert "userfaultfd" in skipped["uffd-unit-tests"].lower()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(outcome.bundle)],
                          capture_output=True, text=True)
    # The exit status also judges the metrics (zeroing counters differ between the stacks by design).
    assert proc.stdout.count("selftests: 0 regression(s), 0 flaky") == len(b.kernels) - 1, proc.stdout
    assert "REGRESSION selftest" not in proc.stdout


def test_a_series_that_breaks_a_selftest_is_flagged_by_compare(tmp_path, patches_root):
    scenario = tmp_path / "gate.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "selftest-gate", "guest": {"memory": "1G", "cpus": 2},
        "kernels": ["base", BREAK], "repetitions": 2,
        "steps": [{"kselftest": ["map_fixed_noreplace", "mseal_test", "madv_populate"], "phase": "selftests"}],
    }))
    outcome = run_scenario(scenario, results_dir=tmp_path)
    assert outcome.status == "failed", "kselftests_pass fails on the broken kernel"
    b = load_bundle(outcome.bundle)
    broken = outcomes(b, BREAK)
    assert any(results == [FAIL, FAIL] for (test, _), results in broken.items() if test == "map_fixed_noreplace")
    assert all(set(r) == {PASS} for r in outcomes(b, "base").values())
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(outcome.bundle), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (cmp,) = json.loads(proc.stdout)["comparisons"]
    regressions = cmp["selftests"]["regressions"]
    assert regressions and all(r.startswith("map_fixed_noreplace: ") for r in regressions)
    assert not cmp["selftests"]["flaky"]


def test_stress_keeps_every_page_zero_and_the_kernel_log_clean(tmp_path):
    outcome = run_scenario(REPO_ROOT / "scenarios" / "stress.yaml", results_dir=tmp_path)
    assert outcome.status == "complete", outcome.error
    b = load_bundle(outcome.bundle)
    for kernel in b.kernels:
        steps = {s["phase"]: s for s in json.loads((outcome.bundle / b.kernel_slug(kernel) / "rep1" /
                                                    "steps.json").read_text())}
        assert steps["stress"]["touch_runs"] > 0 and steps["stress"]["dirty_runs"] > 0
        assert steps["stress"]["balloon_cycles"] > 0
    assert all(r.ok for r in b.expectations)
