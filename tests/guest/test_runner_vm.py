"""The KVM runner VM (harness kvm-runner): the job it runs, what it streams back, what reaches the host, and
that nothing is left behind.  The VM tests boot the real runner (a TCG guest) with real virtiofsd shares."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from harness.guest.runner_vm import (
    DIED_AT_BOOT,
    IN_RUNNER_ENV,
    MARKER,
    RCU_STALL,
    _ConsoleCounter,
    _MarkerReader,
    died_of_patching_race_at_boot,
    in_runner_vm,
    job_script,
)
from harness.machine.vm import run_dir_owner, run_dir_root, sweep_stale_run_dirs
from harness.paths import REPO_ROOT

HARNESS = str(Path(sys.executable).parent / "harness")
# A runner VM inside the runner VM would be TCG under TCG: minutes per boot, and nothing more to learn.
not_nested = pytest.mark.skipif(in_runner_vm(), reason="already inside the KVM runner VM")


def test_job_script_runs_the_argv_in_its_directory_with_only_the_given_environment(tmp_path):
    odd = tmp_path / "a dir with 'quotes'"
    odd.mkdir()
    argv = ["sh", "-c", 'printf "%s|%s|%s|%s" "$PWD" "$1" "$HOME" "${SECRET-unset}"', "sh", "two words; $(x)"]
    script = job_script(argv, odd, {"HOME": "/h", "PATH": os.environ["PATH"]})
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={**os.environ, "SECRET": "s"})
    assert out.stdout == f"{odd}|two words; $(x)|/h|unset"


def test_marker_reader_passes_output_on_and_picks_out_the_exit_status(tmp_path):
    out = tmp_path / "job.out"
    out.write_bytes(f"{MARKER}ready 1.5@@\r\nline one\r\npartial".encode())
    seen: list[str] = []
    reader = _MarkerReader(out, seen.append)
    reader.pump()
    assert seen == ["line one\n"] and reader.ready_at is not None and reader.exit_code is None
    with out.open("ab") as f:
        f.write(f" line\r\n{MARKER}exit 7@@\r\n".encode())
    reader.pump(final=True)
    assert seen == ["line one\n", "partial line\n"] and reader.exit_code == 7


def test_console_counter_counts_whole_new_lines_only(tmp_path):
    console = tmp_path / "console.log"
    counter = _ConsoleCounter(console, RCU_STALL)
    assert counter.count() == 0  # QEMU has not made the file yet
    console.write_text(f"[ 1.0] boot\n[186.5] {RCU_STALL} on CPUs/tasks:\n[186.6] rcu: \t(detected by 1")
    assert counter.count() == 1
    with console.open("a") as f:
        f.write(f")\n[249.5] {RCU_STALL[:20]}")
    assert counter.count() == 1  # the second report is not a whole line yet
    with console.open("a") as f:
        f.write(f"{RCU_STALL[20:]} on CPUs/tasks:\n")
    assert counter.count() == 2
    counter.close()


def test_only_a_runner_that_died_of_the_patching_race_before_its_job_is_booted_again(tmp_path):
    int3 = "[    1.726748] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\nKernel panic - not syncing: Fatal exception"
    out = tmp_path / "job.out"
    out.write_bytes(b"")
    before_job = _MarkerReader(out, lambda _line: None)
    before_job.pump(final=True)
    assert died_of_patching_race_at_boot(before_job, int3)
    assert not died_of_patching_race_at_boot(before_job, "Kernel panic - not syncing: VFS: Unable to mount root")
    out.write_bytes(f"{MARKER}ready 2.1@@\nsome output\n".encode())
    job_started = _MarkerReader(out, lambda _line: None)
    job_started.pump(final=True)
    assert not died_of_patching_race_at_boot(job_started, int3)  # the job may have done half its work


def kvm_runner(*args, expect_unusable: str | None = None) -> subprocess.CompletedProcess:
    """Run the runner VM; skip (saying why) where this host cannot give it what it needs for another reason
    than `expect_unusable` (a container where virtiofsd cannot share the host's files, say)."""
    proc = subprocess.run([HARNESS, "kvm-runner", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    for line in proc.stderr.splitlines():
        if line.startswith(f"kvm-runner: {DIED_AT_BOOT}"):
            warnings.warn(line, stacklevel=2)
    unusable = [line for line in proc.stderr.splitlines() if line.startswith("harness: error: KVM runner VM:")]
    if proc.returncode == 2 and unusable and not (expect_unusable and expect_unusable in unusable[0]):
        pytest.skip(unusable[0].removeprefix("harness: error: "))
    return proc


@pytest.mark.vm
@not_nested
def test_a_runner_cpu_without_svm_is_one_line_and_exit_2(tmp_path):
    proc = kvm_runner("--logs", tmp_path / "logs", "--outer-cpu", "max,-svm,-xsave", "--", "true",
                      expect_unusable="no svm")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "KVM runner VM" in line and "no svm" in line


@pytest.mark.vm
@not_nested
def test_the_job_sees_kvm_and_the_host_files_and_writes_only_its_shares(tmp_path):
    share = tmp_path / "share"
    outside = REPO_ROOT / f".kvm-runner-probe-{os.getpid()}"
    job = (f'ls -l /dev/kvm && test "${IN_RUNNER_ENV}" = 1 && cat pyproject.toml | head -1 && '
           f'echo written > {share}/out.txt && touch {outside} && echo done; exit 7')
    proc = kvm_runner("--logs", tmp_path / "logs", "--share", share, "--", "sh", "-c", job)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("crw") and lines[0].endswith("/dev/kvm")  # the runner's own /dev/kvm
    assert lines[1] == "[build-system]" and lines[-1] == "done"
    assert (share / "out.txt").read_text() == "written\n"
    assert not outside.exists()  # the host's / is read-only under a tmpfs overlay
    assert "exit 7" in proc.stderr and (tmp_path / "logs" / "console.log").stat().st_size > 0


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.vm
@not_nested
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killing_the_runner_leaves_no_qemu_and_no_virtiofsd(tmp_path, sig):
    proc = subprocess.Popen([HARNESS, "kvm-runner", "--logs", str(tmp_path / "logs"), "--", "sh", "-c",
                             "echo started; sleep 600"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    if proc.stdout.readline() != "started\n":
        err = proc.stderr.read()
        if proc.wait() == 2 and "KVM runner VM:" in err:
            pytest.skip(err.strip().removeprefix("harness: error: "))
        pytest.fail(f"the runner VM did not start its job: {err}")
    helpers = descendants(proc.pid)
    names = {Path(f"/proc/{p}/exe").resolve().name for p in helpers if alive(p)}
    assert {"qemu-system-x86_64", "virtiofsd"} <= names
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 20
    while any(alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in helpers if alive(p)]
    left = [d for d in run_dir_root().iterdir() if run_dir_owner(d) == proc.pid]
    if sig == signal.SIGKILL:  # no chance to clean up: the next run sweeps it
        sweep_stale_run_dirs()
        left = [d for d in left if d.exists()]
    assert not left
