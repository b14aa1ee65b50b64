"""faultscale on real guests: every worker takes one fault per page it writes, in both mappings and both task
kinds, and the step records ops/s only then.  The kernels-marked test runs the fault-scale scenario, shortened,
on the baseline and a zeroing series."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.kernels.spec import parse_kernel_spec
from harness.paths import REPO_ROOT
from harness.results.scenario_run import run_scenario

pytestmark = pytest.mark.vm

REGION_PAGES = 32 * 256


def steps_of(bundle, slug):
    return {s["phase"]: s for s in json.loads((bundle / slug / "rep1" / "steps.json").read_text())}


def ops_per_s(bundle):
    rows = json.loads((bundle / "metrics.json").read_text())
    return {(m["kernel"], m["phase"]): m["value"] for m in rows if m["name"] == "fault_ops_per_s"}


def assert_faults_match(step):
    assert step["invalid"] is None, step["invalid"]
    assert step["ops"] > 0 and step["ops_per_s"] > 0
    for ops, faults in zip(step["worker_ops"], step["worker_faults"], strict=True):
        assert ops > 0 and ops % step["pages_per_region"] == 0, step
        assert ops <= faults <= ops + max(8, ops // 100), step  # one fault per page written
    assert step["vmstat_delta"]["pgfault"] >= step["ops"]
    assert step["vmstat_delta"].get("thp_fault_alloc", 0) == 0


def test_faultscale_takes_one_fault_per_page_on_stock(tmp_path):
    scenario = tmp_path / "fault-scale-stock.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "fault-scale-stock",
        "guest": {"memory": "1G", "cpus": 2},
        "qemu": {"balloon": {"free_page_reporting": False}},
        "steps": [
            {"fault_scale": {"mapping": "anon", "workers": 2, "seconds": 0.3, "region": "32M"}, "phase": "anon"},
            {"fault_scale": {"mapping": "file", "workers": 2, "seconds": 0.3, "region": "32M"}, "phase": "file"},
            {"fault_scale": {"mapping": "anon", "workers": 2, "seconds": 0.3, "region": "32M", "tasks": "threads"},
             "phase": "anon-threads"},
        ],
    }))
    outcome = run_scenario(scenario, kernels=[parse_kernel_spec("stock")], results_dir=tmp_path)
    assert outcome.status == "complete", outcome.error
    steps = steps_of(outcome.bundle, "stock")
    for phase, mode, tasks in (("anon", "anon", "processes"), ("file", "file", "processes"),
                               ("anon-threads", "anon", "threads")):
        step = steps[phase]
        assert (step["mode"], step["tasks"], step["workers"], step["pages_per_region"]) == (mode, tasks, 2, REGION_PAGES)
        assert_faults_match(step)
    assert set(ops_per_s(outcome.bundle)) == {("stock", p) for p in steps}


@pytest.mark.kernelbuild
@pytest.mark.kernels
def test_fault_scale_scenario_on_the_baseline_and_a_series(tmp_path):
    data = yaml.safe_load((REPO_ROOT / "scenarios" / "fault-scale-off-2cpu.yaml").read_text())
    for step in data["steps"]:
        step["fault_scale"]["seconds"] = 0.3
    data["repetitions"] = 1
    scenario = tmp_path / "fault-scale-short.yaml"
    scenario.write_text(yaml.safe_dump(data))
    kernels = ["base+zeroing-stats", "base+zeroing-stats+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins"
               "+deflate-zeroed-hint"]
    outcome = run_scenario(scenario, kernels=[parse_kernel_spec(k) for k in kernels], results_dir=tmp_path)
    assert outcome.status == "complete", outcome.error
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    rates = ops_per_s(outcome.bundle)
    for record in manifest["kernels"]:
        steps = steps_of(outcome.bundle, record["slug"])
        for phase in ("page_fault1", "page_fault2"):
            assert steps[phase]["workers"] == 2
            assert_faults_match(steps[phase])
            assert rates[(record["spec"], phase)] > 0
