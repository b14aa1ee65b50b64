"""memtouch and memdirty fault in what they claim on a real guest: one write fault per 4 KiB page, one THP
allocation per 2 MiB in THP mode (issue 8: a locked RMW took a read fault first under TCG and never made a THP)."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.kernels.spec import parse_kernel_spec
from harness.results.scenario_run import run_scenario

pytestmark = pytest.mark.vm

PAGES = 64 * 256
HUGE = 64 // 2
SCENARIO = {
    "name": "fault-path",
    "guest": {"memory": "1G", "cpus": 1},
    "qemu": {"balloon": {"free_page_reporting": False}},
    "steps": [
        {"memtouch": "64M", "phase": "populate4k"},
        {"memtouch": {"size": "64M", "fault": "store"}, "phase": "store4k"},
        {"memtouch": {"size": "64M", "thp": True}, "phase": "populatethp"},
        {"memtouch": {"size": "64M", "thp": True, "fault": "store"}, "phase": "storethp"},
        {"memdirty": "64M", "phase": "dirty4k"},
        {"memdirty": {"size": "64M", "thp": True}, "phase": "dirtythp"},
    ],
    "expect": {"nonzero_pages": 0},
}


@pytest.mark.parametrize("kernel, timing", [("stock", "icount"), ("stock", "realtime"),
                                            pytest.param("base", "realtime", marks=pytest.mark.kernelbuild)])
def test_probes_take_one_write_fault_per_page_and_allocate_thps(kernel, timing, tmp_path):
    scenario = tmp_path / "fault-path.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    outcome = run_scenario(scenario, kernels=[parse_kernel_spec(kernel)], results_dir=tmp_path, timing=timing)
    assert outcome.status == "complete", outcome.error
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    assert manifest["timing"] == (timing if manifest["accel"] == "tcg" else "realtime")
    (record,) = manifest["kernels"]
    assert record["clocksource"] == ("kvm-clock" if manifest["accel"] == "kvm" else record["clocksource"])
    assert record["clocksource"], "the guest's clocksource is recorded"
    if manifest["timing"] == "icount":
        argv = manifest["qemu"]["argv"]
        assert argv[argv.index("-icount") + 1] == "shift=0,sleep=off,align=off"
    steps = {s["phase"]: s for s in json.loads((outcome.bundle / kernel / "rep1" / "steps.json").read_text())}
    for phase in ("populate4k", "store4k", "dirty4k"):
        s = steps[phase]
        assert s["invalid"] is None
        assert PAGES <= s["faults"] <= PAGES + PAGES // 100, (phase, s["faults"])
        # System-wide, so sshd and the shell add a few hundred; a read-then-COW path would double it.
        assert PAGES <= s["vmstat_delta"]["pgfault"] < 1.2 * PAGES, (phase, s["vmstat_delta"]["pgfault"])
        assert s["vmstat_delta"]["thp_fault_alloc"] == 0
    for phase in ("populatethp", "storethp", "dirtythp"):
        s = steps[phase]
        assert s["invalid"] is None
        alloc, fallback = s["vmstat_delta"]["thp_fault_alloc"], s["vmstat_delta"]["thp_fault_fallback"]
        assert alloc >= HUGE - fallback and alloc > 0, (phase, alloc, fallback)
        assert s["faults"] >= HUGE and s["faults"] <= HUGE + fallback * 512 + 8, (phase, s["faults"])
    assert steps["populate4k"]["mode"] == "populate" and steps["store4k"]["mode"] == "store"
    assert steps["store4k"]["unchecked_bytes_per_page"] == 1 and steps["populate4k"]["unchecked_bytes_per_page"] == 0
    metrics = json.loads((outcome.bundle / "metrics.json").read_text())
    timed = {m["phase"] for m in metrics if m["name"] in ("fault_in_ms", "dirty_ms")}
    assert timed == set(steps), "a valid probe step records its timing"
