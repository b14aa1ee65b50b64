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
    """Also when pytest itself runs in the background, where the harness inherits SIGINT ignored."""
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


# An oops that kills the process serving the command (seed 000 on a host that cannot discard handed a page-table
# page full of stale data to pud_alloc(), and dropbear died): the command's connection then never answers.  The
# line is written at emergency level, so it reaches the console as an oops's own would.
OOPS = """
name: oops
guest: {memory: 512M, cpus: 1}
steps:
  - shell: {command: "echo '<0>BUG: unable to handle page fault for address: ff16b00b1e5a5558' > /dev/kmsg; sleep 240",
            timeout_s: 600}
"""


def test_an_oops_fails_the_running_command_at_once(tmp_path):
    t0 = time.monotonic()
    proc, results = start_run(tmp_path, OOPS)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert time.monotonic() - t0 < 200, "the command waited for its sleep instead of seeing the oops"
    manifest = json.loads((only_bundle(results) / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "BUG: unable to handle page fault" in manifest["error"], manifest["error"]
    assert not qemu_pids_matching(str(results))


CHATTY = """
name: chatty
guest: {memory: 512M, cpus: 1}
steps:
  - shell: "yes 0123456789abcdef0123456789abcdef | head -c 600000"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs for the results needs root")
def test_a_results_directory_that_fills_up_is_one_clear_error_and_no_qemu_left(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        scenario = tmp_path / "s.yaml"
        scenario.write_text(CHATTY)
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario), "--results", str(mnt)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("harness: error:") and "No space left on device" in last, proc.stderr
        assert not qemu_pids_matching(str(mnt))
        # A bundle that could not be written stays under its hidden .tmp- name; one renamed into place is failed.
        for bundle in (p for p in mnt.iterdir() if not p.name.startswith(".")):
            assert json.loads((bundle / "manifest.json").read_text())["status"] == "failed"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
