"""The KVM path on every `make test`: scenarios/smoke.yaml with --require-accel kvm, on the host's own KVM
where it works, else in the KVM runner VM (nested KVM on QEMU's emulated SVM)."""

from __future__ import annotations

import warnings

import pytest
from kvm_where import HARNESS, NESTED_CRASH, RUNNER_LOST, first_line, host_kvm_usable, run_with_kvm

from harness.results.bundle import load_bundle

pytestmark = pytest.mark.vm
ATTEMPTS = 3
# An attempt takes 3-5 minutes here; a hung one is cut off after this, not after the 25 minutes it had before.
ATTEMPT_TIMEOUT_S = 720


def test_smoke_with_require_accel_kvm_runs_under_kvm(tmp_path):
    # Under the runner VM's emulation a guest kernel now and then faults (harness/guest/runner_vm.py): such a
    # run is repeated, up to ATTEMPTS in all, and each crash stays in this test's warnings.  On a host with
    # KVM of its own a crash is never repeated.
    for attempt in range(1, ATTEMPTS + 1):
        results = tmp_path / f"results-{attempt}"
        proc = run_with_kvm([HARNESS, "run", "scenarios/smoke.yaml", "--require-accel", "kvm", "--results",
                             str(results)], shares=[results], logs=tmp_path / f"runner-{attempt}",
                             timeout_s=ATTEMPT_TIMEOUT_S)
        crash = first_line(proc.stdout, NESTED_CRASH + RUNNER_LOST)
        if proc.returncode == 0 or crash is None or attempt == ATTEMPTS or host_kvm_usable():
            break
        warnings.warn(f"a guest crashed in the KVM runner VM (attempt {attempt}), running it again: {crash}",
                      stacklevel=1)
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
