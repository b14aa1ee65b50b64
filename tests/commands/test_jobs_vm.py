"""`--jobs 2` on real icount guests: the same bundle as a serial run, within the icount threshold; and a
fault or an interruption still leaves no QEMU behind."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import qemu_pids_matching

from harness.machine.vm import run_dir_owner
from harness.paths import cache_root
from harness.results.bundle import load_bundle
from harness.results.compare import compare_kernels
from harness.results.metrics import TIME, definition
from harness.results.scenario_run import run_scenario
from harness.results.stats import DEFAULT_THRESHOLD_PCT, ICOUNT_THRESHOLD_PCT, IMPROVEMENT, pct_change

pytestmark = pytest.mark.vm

SMALL = """
name: jobs-small
guest: {memory: 512M, cpus: 1}
qemu: {timing: icount, balloon: {free_page_reporting: false}}
kernels: [stock]
repetitions: 3  # a median of 3: fresh icount boots now and then differ by 1-2 % in one figure (dirty_ms)
steps:
  - boot
  - memtouch: 64M
    phase: touch
  - memdirty: 32M
    phase: dirty
expect:
  nonzero_pages: 0
"""

LONG = """
name: jobs-long
guest: {memory: 512M, cpus: 1}
qemu: {timing: icount}
repetitions: 2
repetitions_from: boot  # two guests booting side by side (from a snapshot the second would wait for the save)
steps:
  - sleep: 600
"""

# Timed on the host's clock even under icount: what the host's load (other guests, builds) moves.
HOST_CLOCK = {"boot_to_ssh_s", "balloon_inflate_s", "balloon_deflate_s"}


@pytest.fixture(scope="module")
def serial_and_parallel(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("jobs")
    scenario = tmp / "small.yaml"
    scenario.write_text(SMALL)
    bundles = []
    for jobs in (1, 2):
        outcome = run_scenario(scenario, results_dir=tmp / f"jobs{jobs}", jobs=jobs)
        assert outcome.ok, outcome.error
        bundles.append(outcome.bundle)
    return bundles[0], bundles[1]


def rows(bundle: Path) -> list[tuple]:
    return [(m["name"], m["phase"], m["rep"], m["kernel"]) for m in json.loads((bundle / "metrics.json").read_text())]


def test_parallel_bundle_has_the_serial_bundles_repetitions_in_the_planned_order(serial_and_parallel):
    serial, parallel = serial_and_parallel
    ms, mp = load_bundle(serial).manifest, load_bundle(parallel).manifest
    assert (ms.jobs, mp.jobs) == (1, 2)
    assert ms.rep_order == mp.rep_order == [{"kernel": "stock", "rep": rep, "from": "boot"} for rep in (1, 2, 3)]
    assert rows(serial) == rows(parallel)
    # The two guests of the parallel run really ran at the same time: rep 2's QEMU started before rep 1 ended.
    started_2 = (parallel / "stock/rep2/qemu-argv.json").stat().st_mtime
    assert started_2 < (parallel / "stock/rep1/dmesg.txt").stat().st_mtime


def test_parallel_and_serial_guest_timings_agree_within_the_icount_threshold(serial_and_parallel):
    a, b = (load_bundle(p) for p in serial_and_parallel)
    assert a.timing == b.timing == "icount"
    sa, sb = a.samples("stock"), b.samples("stock")
    timings = [k for k in sa if definition(k[0]).kind == TIME and k[0] not in HOST_CLOCK]
    assert {"fault_in_ms", "sys_ms", "dirty_ms"} <= {name for name, _ in timings}
    for key in timings:
        change = pct_change(statistics.median(sa[key]), statistics.median(sb[key]))
        assert abs(change) < ICOUNT_THRESHOLD_PCT, f"{key}: {sa[key]} (jobs 1) vs {sb[key]} (jobs 2): {change:+.3f} %"
    # And `harness compare` finds nothing moved (host-time figures such as boot_to_ssh_s it does not judge here).
    cmp = compare_kernels(a, "stock", b, "stock", DEFAULT_THRESHOLD_PCT)
    moved = [(r.judgement.name, r.phase, r.judgement.verdict) for r in cmp.rows
             if r.judgement.verdict in ("regression", IMPROVEMENT)]
    assert not moved


def start_run(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(LONG)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(scenario), "--results", str(results),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, results


def wait_for_two_guests(results: Path, timeout: float = 600) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = qemu_pids_matching(str(results))
        up = [t for t in results.glob(".tmp-*/*/rep*/transcript.log") if "$ uname -r" in t.read_text()]
        if len(pids) == 2 and len(up) == 2:
            return pids
        time.sleep(0.5)
    raise AssertionError("the two guests never came up together")


def failed_bundle(results: Path) -> dict:
    (bundle,) = [p for p in results.iterdir()]
    assert not bundle.name.startswith(".tmp")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["jobs"] == 2
    return manifest


def test_interrupting_a_parallel_run_leaves_no_qemu(tmp_path):
    proc, results = start_run(tmp_path, "--jobs", "2")
    wait_for_two_guests(results)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    failed_bundle(results)
    assert not qemu_pids_matching(str(results))
    assert not [p for p in (cache_root() / "run").iterdir() if run_dir_owner(p) == proc.pid]


def test_one_guest_dying_fails_the_run_and_stops_the_other(tmp_path):
    proc, results = start_run(tmp_path, "--jobs", "2")
    pids = wait_for_two_guests(results)
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    manifest = failed_bundle(results)
    assert "QEMU exited" in manifest["error"], manifest["error"]
    assert not qemu_pids_matching(str(results))
