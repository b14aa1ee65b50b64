"""`harness nightly` without --shards takes the sharded nightly's one path (plan, shard, merge, report), so a
matrix's `aa: true` entry reaches merge.json and calibrates the report, as it does with --shards N."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from harness.results.calibration import Calibration
from harness.results.history import load_night
from harness.results.shards import load_merge

pytestmark = pytest.mark.vm  # two boots of the stock kernel: about a minute under TCG

SCENARIO = """name: nightly-aa
guest: {memory: 1G, cpus: 1}
kernels: [stock]
steps: [boot, {memtouch: 64M, phase: touch}]
"""


def test_an_unsharded_nightly_keeps_its_aa_entry(tmp_path):
    (tmp_path / "s.yaml").write_text(SCENARIO)
    (tmp_path / "m.yaml").write_text("- scenario: s.yaml\n  kernels: [stock]\n  reps: 2\n  aa: true\n")
    night = tmp_path / "night"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "nightly", tmp_path / "m.yaml", "--results", night],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merge = load_merge(night / "merged")
    assert merge is not None and not merge.problems and len(merge.plan.shards) == 1
    (cell,) = merge.cells
    assert cell.aa and cell.status == "complete" and cell.kernels == ["stock"]
    assert (night / "report" / "index.html").is_file()
    merged = load_night(night / "merged")
    (bundle,) = merged.bundles
    assert merged.named_aa(bundle) and merged.is_aa(bundle)
    calibration = Calibration.from_nights([merged])
    assert calibration, "the A/A cell gave no observation"
    assert any(o.name == "fault_in_ms" and o.phase == "touch" for obs in calibration.observations.values() for o in obs)
    # What carries it is merge.json: the same bundle in a plain results directory is not an A/A run.
    plain = tmp_path / "plain"
    shutil.copytree(bundle.path, plain / bundle.path.name)
    assert not Calibration.from_nights([load_night(plain)])
