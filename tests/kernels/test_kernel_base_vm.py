"""The pinned base kernel, built through the harness (cold once, cached after), boots like the stock one."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.results.scenario_run import run_scenario

pytestmark = [pytest.mark.vm, pytest.mark.kernelbuild]

SCENARIO = {
    "name": "base-boot",
    "guest": {"memory": "1G", "cpus": 2},
    "kernels": ["base"],
    "steps": [
        {"balloon": "768M", "phase": "inflate"},
        {"memtouch": "64M", "phase": "touch"},
    ],
    "expect": {"balloon_reached": True, "balloon_inflate_matches": True, "nonzero_pages": 0},
}


def test_base_kernel_builds_and_boots(tmp_path):
    scenario = tmp_path / "base-boot.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    outcome = run_scenario(scenario, results_dir=tmp_path / "results")
    assert outcome.ok, outcome.error
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    (kernel,) = manifest["kernels"]
    assert kernel["cache_key"] and kernel["series"] == []
    # uname -r in the guest is the pinned Debian linux-source version (6.12.117)
    assert kernel["guest_release"].startswith("6.12.117"), kernel["guest_release"]
    assert kernel["guest_release"] == kernel["version"]
    vmstat = (outcome.bundle / "base" / "rep1" / "vmstat-boot.txt").read_text()
    for counter in ("pgfault", "pgalloc_normal", "balloon_inflate", "thp_fault_alloc"):
        assert f"\n{counter} " in vmstat, f"{counter} missing: CONFIG_VM_EVENT_COUNTERS not in effect?"
    metrics = json.loads((outcome.bundle / "metrics.json").read_text())
    inflated = [m["value"] for m in metrics if m["name"] == "vmstat.balloon_inflate" and m["phase"] == "inflate"]
    assert inflated == [256 * 256]
