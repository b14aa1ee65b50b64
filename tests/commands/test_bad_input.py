"""Bad input is exit 2 with one line before anything starts; an unusable results directory is exit 1
with one clear line and nothing marked complete."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.results import scenario_run as run_cmd

SCENARIO = "name: s\nguest: {memory: 512M, cpus: 1}\nsteps: [sleep: 1]\n"


def harness(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def scenario(tmp_path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    return path


def test_a_series_that_does_not_exist_is_bad_input_and_leaves_no_bundle(tmp_path, scenario):
    proc = harness("run", scenario, "--kernel", "base+no-such-series", "--results", tmp_path / "r")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "base+no-such-series" in lines[0] and "'no-such-series'" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_kernel_path_that_is_not_a_kernel_image_is_bad_input(tmp_path, scenario):
    text = tmp_path / "notes" / "bzImage"
    text.parent.mkdir()
    text.write_text("just some text, long enough to have a byte at 0x202\n" * 20)
    proc = harness("run", scenario, "--kernel", text, "--results", tmp_path / "r")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(text) in lines[0] and "not a bzImage or an ELF vmlinux" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


def test_kernel_images_that_are_accepted(tmp_path):
    from harness.kernels.spec import check_kernel_image

    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF" + b"\0" * 60)
    bz = tmp_path / "bzImage"
    bz.write_bytes(b"\0" * 0x202 + b"HdrS" + b"\0" * 16)
    check_kernel_image(elf)
    check_kernel_image(bz)


def test_a_results_directory_that_cannot_be_created_is_one_clear_error(tmp_path, scenario):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = harness("run", scenario, "--results", blocker / "results")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create a bundle there" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_a_read_only_results_directory_is_one_clear_error(tmp_path, scenario):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], check=True)
    try:
        proc = harness("run", scenario, "--results", mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0] and "Traceback" not in proc.stderr


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_the_run_fails_the_bundle_without_a_traceback(tmp_path, scenario, monkeypatch, capsys):
    monkeypatch.setattr(run_cmd, "execute", _enospc)
    outcome = run_cmd.run_scenario(scenario, results_dir=tmp_path)
    assert outcome.status == "failed" and not outcome.ok
    assert outcome.error == f"cannot write the bundle in {tmp_path}: No space left on device"
    assert json.loads((outcome.bundle / "manifest.json").read_text())["status"] == "failed"
    assert "Traceback" not in capsys.readouterr().err


def test_a_full_disk_when_the_bundle_is_written_leaves_nothing_marked_complete(tmp_path, scenario, monkeypatch):
    monkeypatch.setattr(run_cmd, "execute", _enospc)
    monkeypatch.setattr(run_cmd.BundleWriter, "finish", _enospc)
    with pytest.raises(HarnessError, match="the bundle could not be written: No space left on device"):
        run_cmd.run_scenario(scenario, results_dir=tmp_path / "r")
    assert all(p.name.startswith(".tmp-") for p in (tmp_path / "r").iterdir())
    assert not list((tmp_path / "r").rglob("manifest.json"))


@pytest.mark.parametrize("command", [["run", "{scenario}"], ["ablate", "{scenario}", "--series", "zeroing-stats"],
                                     ["bisect", "{scenario}", "--good", "base", "--bad", "base+zeroing-stats"],
                                     ["nightly", "{matrix}"], ["run-shard", "{plan}", "--shard", "s1"]])
def test_jobs_below_one_is_bad_input(tmp_path, scenario, command):
    args = [a.format(scenario=scenario, matrix=tmp_path / "m.yaml", plan=tmp_path / "plan.json") for a in command]
    (tmp_path / "m.yaml").write_text(f"- scenario: {scenario}\n")
    proc = harness(*args, "--jobs", "0", "--results", tmp_path / "r")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["harness: error: --jobs must be at least 1, got 0"]
    assert not (tmp_path / "r").exists()
