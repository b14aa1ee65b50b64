"""`harness bisect` on real guests names the patch that did it (make test-kernels: it builds kernels).

A test-only series (tests/data/series/fault-path-bisect, six patches against base+zeroing-stats) has one patch
that zeroes every order-0 anonymous folio a second time; the other five change comments only.  The bisect
must name patch 4 from guest runs, in at most ceil(log2 6) + 1 = 4 judged steps.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.vm, pytest.mark.kernelbuild, pytest.mark.kernels]



def scenario(tmp_path, steps, expect=None) -> Path:
    path = tmp_path / "bisect.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bisect", "guest": {"memory": "1G", "cpus": 1},
        "qemu": {"balloon": {"free_page_reporting": True}, "timing": "icount"},
        "steps": steps, "expect": expect or {"nonzero_pages": 0}}))
    return path


def test_bisect_names_the_patch_that_slowed_the_4k_fault_path(patches_root, tmp_path, capsys):
    path = scenario(tmp_path, [{"memtouch": "128M", "phase": "touch"}])
    code = main(["bisect", str(path), "--good", "base+zeroing-stats", "--bad", "base+zeroing-stats+fault-path-bisect",
                 "--metric", "fault_in_ms@touch", "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert "first bad: [4] fault-path-bisect 4/6: mm: memory: zero order-0 anonymous folios twice" in out
    steps = re.findall(r"^# (good|bad|skip|unknown): \[(\d)\]", out, re.MULTILINE)
    assert ("bad", "6") in steps and len(steps) <= math.ceil(math.log2(6)) + 1


def test_bisect_with_an_expectation_names_the_negative_control(patches_root, tmp_path, capsys):
    """A series with broken-trust-host's patch among harmless ones: --expect nonzero_pages names it."""
    trust = patches_root / "trust-bisect"
    trust.mkdir()
    harmless = sorted((patches_root / "fault-path-bisect").glob("000[123]-*.patch"))
    (broken,) = (REPO_ROOT / "kernel_patches" / "broken-trust-host").glob("*.patch")
    order = [harmless[0], harmless[1], broken, harmless[2]]
    for i, p in enumerate(order, 1):
        shutil.copy(p, trust / f"{i:04d}-{p.name[5:]}")
    (trust / "series").write_text("\n".join(sorted(p.name for p in trust.glob("*.patch"))) + "\n")
    below = "base+zeroing-stats+balloon-opt-ins+host-zeroed-reporting"
    path = scenario(tmp_path, [{"memdirty": "600M", "phase": "dirty"},
                               {"wait_reporting": {"settle_s": 3, "timeout_s": 120}, "phase": "reporting"},
                               {"memtouch": "500M", "phase": "touch"}])
    code = main(["bisect", str(path), "--good", below, "--bad", f"{below}+trust-bisect",
                 "--expect", "nonzero_pages", "--reps", "1", "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert re.search(r"first bad: \[3\] trust-bisect 3/4: .*trust the host", out), out
