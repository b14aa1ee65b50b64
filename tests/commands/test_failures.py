"""Failures leave a failed bundle, a non-zero exit, and no QEMU behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import qemu_pids_matching

from harness.machine.vm import run_dir_owner
from harness.paths import cache_root

pytestmark = pytest.mark.vm

LONG = """
name: long
guest: {memory: 512M, cpus: 1}
steps:
  - sleep: 600
"""

PANIC = """
name: panic
guest: {memory: 512M, cpus: 1}
steps:
  - shell: "echo c > /proc/sysrq-trigger"
"""


def start_run(tmp_path: Path, text: str) -> tuple[subprocess.Popen, Path]:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(scenario), "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, results


def run_dirs_of(pid: int) -> list[Path]:
    return [p for p in (cache_root() / "run").iterdir() if run_dir_owner(p) == pid]


def only_bundle(results: Path) -> Path:
    bundles = [p for p in results.iterdir()]
    assert len(bundles) == 1 and not bundles[0].name.startswith(".tmp"), bundles
    return bundles[0]


def wait_for_qemu(results: Path, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = qemu_pids_matching(str(results))
        transcripts = list(results.glob(".tmp-*/*/rep1/transcript.log"))
        if pids and transcripts and "$ uname -r" in transcripts[0].read_text():
            return pids[0]
        time.sleep(0.2)
    raise AssertionError("the guest never came up")


def test_killing_qemu_mid_run_gives_failed_bundle_and_no_qemu_left(tmp_path):
    proc, results = start_run(tmp_path, LONG)
    pid = wait_for_qemu(results)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    bundle = only_bundle(results)
    assert out.strip().splitlines()[-1] == str(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "QEMU exited" in manifest["error"]
    assert (bundle / "stock/rep1/serial.log").exists()
    assert not qemu_pids_matching(str(results))
    assert not run_dirs_of(proc.pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_harness_leaves_no_qemu(tmp_path, sig):
    proc, results = start_run(tmp_path, LONG)
    wait_for_qemu(results)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert json.loads((only_bundle(results) / "manifest.json").read_text())["status"] == "failed"
    assert not qemu_pids_matching(str(results))
    assert not run_dirs_of(proc.pid), "the interrupted harness left its VM run dir behind"


def test_guest_panic_is_reported(tmp_path):
    proc, results = start_run(tmp_path, PANIC)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    manifest = json.loads((only_bundle(results) / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "Kernel panic" in manifest["error"] or "sysrq" in manifest["error"].lower(), manifest["error"]
    assert not qemu_pids_matching(str(results))
