"""Repetitions from a post-boot snapshot: one repetition per kernel boots and saves, the others wait for it and
load it, or boot when the save failed; a real run records which repetitions came from the snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import write_scenario

from harness.machine.vm import run_dir_root
from harness.paths import REPO_ROOT
from harness.scenario.saved_boot import BootFacts, SavedBoot, SavedBoots

FACTS = BootFacts("6.12", "tsc", zeroing=None)


def test_one_repetition_saves_and_the_others_wait_for_it(tmp_path):
    boot = SavedBoot(tmp_path / "k.state")
    assert boot.claim() and not boot.claim() and not boot.claim()
    got: list[BootFacts | None] = []
    waiters = [threading.Thread(target=lambda: got.append(boot.wait())) for _ in range(2)]
    for t in waiters:
        t.start()
    assert not got  # nobody loads a save that is not written yet
    boot.saved(FACTS)
    for t in waiters:
        t.join(5)
    assert got == [FACTS, FACTS]


def test_a_failed_save_lets_the_others_boot(tmp_path):
    boot = SavedBoot(tmp_path / "k.state")
    assert boot.claim()
    boot.failed()
    assert boot.wait() is None


def test_saved_boots_are_one_per_kernel_and_gone_when_the_run_ends():
    with SavedBoots() as boots:
        a, b = boots.for_kernel(0), boots.for_kernel(1)
        assert a is boots.for_kernel(0) and a.path != b.path and a.path.parent == boots.dir
        assert boots.dir.name.startswith("vm-")  # swept like a run dir if the harness is SIGKILLed
        a.path.write_bytes(b"state")
    assert not boots.dir.exists() and b.wait() is None  # a waiter is never left hanging


def test_a_boot_step_with_repetitions_from_snapshot_is_bad_input(tmp_path):
    path = write_scenario(tmp_path, "name: s\nrepetitions_from: snapshot\nsteps:\n  - boot\n  - memtouch: 64M\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "repetitions from a saved boot skip" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.vm
def test_repetitions_start_from_the_saved_boot(tmp_path):
    scenario = tmp_path / "snap.yaml"
    scenario.write_text("name: snap\nguest: {memory: 1G}\nkernels: [stock]\nrepetitions: 3\n"
                        "repetitions_from: snapshot\nsteps:\n  - memdirty: 256M\n    phase: dirty\n"
                        "  - memtouch: 128M\n    phase: touch\n")
    saved_before = set(run_dir_root().glob("vm-*-saved-*"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bundle,) = [p.parent for p in (tmp_path / "r").glob("*/manifest.json")]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["repetitions_from"] == "snapshot"
    assert [r["from"] for r in manifest["rep_order"]] == ["boot", "snapshot", "snapshot"]
    metrics = json.loads((bundle / "metrics.json").read_text())
    by_rep = {rep: {m["name"] for m in metrics if m["rep"] == rep} for rep in (1, 2, 3)}
    assert "boot_to_ssh_s" in by_rep[1] and "save_state_s" in by_rep[1]
    for rep in (2, 3):
        assert "restore_s" in by_rep[rep] and "boot_to_ssh_s" not in by_rep[rep]
        assert {"nonzero_pages", "fault_in_ms"} <= by_rep[rep]
    touched = [m["value"] for m in metrics if m["name"] == "nonzero_pages"]
    assert touched == [0, 0, 0]
    assert set(run_dir_root().glob("vm-*-saved-*")) <= saved_before  # the saved boot is removed
