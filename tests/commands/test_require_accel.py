"""`--require-accel kvm`: exit 2 before anything boots where KVM is not usable (here: it is not), and a run
whose guests did not use KVM and kvm-clock fails."""

from __future__ import annotations

import subprocess
import sys

import bundle_synth as synth
import pytest

from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.night_plan import make_plan
from harness.results.required_accel import required_accel_rows
from harness.results.shards import write_model

SMOKE = REPO_ROOT / "scenarios" / "smoke.yaml"


def harness(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def kvm_unusable():
    from harness.guest.launch import choose_accel

    choice = choose_accel()
    if choice.accel == "kvm":
        pytest.skip("KVM is usable on this host: --require-accel kvm has nothing to refuse")
    return choice


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_run_refuses_to_fall_back(kvm_unusable, tmp_path):
    proc = harness("run", SMOKE, "--require-accel", "kvm", "--results", tmp_path / "r")
    assert proc.returncode == 2
    line = one_line(proc)
    assert "--require-accel kvm: kvm is not usable on this host" in line and "refusing to fall back to tcg" in line
    assert not (tmp_path / "r").exists()  # the bundle directory is made before the first boot


def test_nightly_and_run_shard_refuse_to_fall_back(kvm_unusable, tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"- scenario: {SMOKE}\n  kernels: [stock]\n")
    write_model(tmp_path / "plan.json", make_plan(matrix, 1, []))
    nightly = harness("nightly", matrix, "--require-accel", "kvm", "--results", tmp_path / "n")
    sharded = harness("nightly", matrix, "--shards", "1", "--require-accel", "kvm", "--results", tmp_path / "s")
    shard = harness("run-shard", tmp_path / "plan.json", "--shard", "s1", "--require-accel", "kvm",
                    "--results", tmp_path / "r")
    for proc in (nightly, sharded, shard):
        assert proc.returncode == 2 and "kvm is not usable" in one_line(proc)
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob("n/*-smoke-*"))


def test_a_kvm_bundle_needs_kvm_clock_on_every_kernel():
    good = synth.manifest(kernels=("base", "stock"), accel="kvm")
    for k in good.kernels:
        k.clocksource = "kvm-clock"
    assert all(r.ok for r in required_accel_rows(good, "kvm"))
    good.kernels[1].clocksource = "tsc"
    rows = required_accel_rows(good, "kvm")
    assert [r.ok for r in rows] == [True, False] and "clocksource tsc" in rows[1].detail


@pytest.mark.vm
def test_a_real_bundle_meets_the_kvm_requirement_only_if_it_ran_under_kvm(smoke_bundles):
    """Whichever accelerator this host gave the smoke run (TCG here, KVM on a real runner), the requirement
    is judged from what the bundle recorded."""
    manifest = load_bundle(smoke_bundles[0]).manifest
    (kernel,) = manifest.kernels
    assert kernel.clocksource
    (row,) = required_accel_rows(manifest, "kvm")
    assert f"accelerator {manifest.accel}" in row.detail and f"clocksource {kernel.clocksource}" in row.detail
    if manifest.accel == "kvm":
        assert row.ok == (kernel.clocksource == "kvm-clock")
    else:
        assert not row.ok and "kvm-clock" in row.detail
