"""The KVM path on every `make test`: scenarios/smoke.yaml with --require-accel kvm, on the host's own KVM
where it works, else in the KVM runner VM (nested KVM on QEMU's emulated SVM)."""

from __future__ import annotations

import pytest
from kvm_where import HARNESS, run_with_kvm

from harness.results.bundle import load_bundle

pytestmark = pytest.mark.vm


def test_smoke_with_require_accel_kvm_runs_under_kvm(tmp_path):
    results = tmp_path / "results"
    proc = run_with_kvm([HARNESS, "run", "scenarios/smoke.yaml", "--require-accel", "kvm", "--results", str(results)],
                        shares=[results], logs=tmp_path / "runner", timeout_s=1500)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (path,) = [p.parent for p in results.glob("*/manifest.json")]
    bundle = load_bundle(path)
    m = bundle.manifest
    assert m.status == "complete" and m.accel == "kvm" and m.timing == "realtime"
    (kernel,) = m.kernels
    assert kernel.clocksource == "kvm-clock"
    rows = {r.name: r for r in bundle.expectations}
    assert rows["require_accel"].ok and rows["kernel_log_clean"].ok, rows
    assert all(r.ok for r in bundle.expectations), [r for r in bundle.expectations if not r.ok]
