"""`make test-kvm`: the KVM path end to end, as a user on a KVM runner types it (tools/kvm-checks.sh), on the
host's own KVM or in the KVM runner VM.  Its results stay under results/kvm/<UTC time>/."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
from kvm_where import RUNNER_LOST, first_line, host_kvm_usable, run_with_kvm

from harness.kernels.resolve import resolve_kernel
from harness.kernels.spec import parse_kernel_spec
from harness.paths import REPO_ROOT
from harness.results.bundle import Bundle, load_bundle
from harness.results.shards import Merge, read_model

pytestmark = [pytest.mark.vm, pytest.mark.kvm_runner]
BUILT = ("base", "base+zeroing-stats")  # what tools/kvm-checks.sh boots besides stock: built here, not there


# Every test here reads the one run of tools/kvm-checks.sh, so a lost runner VM would fail them all: the runner VM
# is started again on the same OUT, where the script runs only the checks that have not passed.  All checks take
# 12-25 minutes here; a runner VM that hangs is cut off after RUNNER_ATTEMPT_S.
RUNNER_ATTEMPTS = 3
RUNNER_ATTEMPT_S = 3600


@pytest.fixture(scope="module")
def checks() -> Path:
    for spec in BUILT:
        resolve_kernel(parse_kernel_spec(spec))
    out = REPO_ROOT / "results" / "kvm" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True)
    for attempt in range(1, RUNNER_ATTEMPTS + 1):
        proc = run_with_kvm(["sh", "tools/kvm-checks.sh", str(out)], shares=[out], logs=out / f"runner-{attempt}",
                            timeout_s=RUNNER_ATTEMPT_S)
        (out / f"checks-{attempt}.log").write_text(proc.stdout)
        lost = first_line(proc.stdout, RUNNER_LOST)
        if proc.returncode == 0 or lost is None or attempt == RUNNER_ATTEMPTS or host_kvm_usable():
            break
        warnings.warn(f"the KVM runner VM was lost (attempt {attempt}), starting it again: {lost}", stacklevel=1)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for earlier in sorted((out / "attempts").glob("*.log")):
        warnings.warn(f"tools/kvm-checks.sh ran a check again; its earlier attempt: {earlier}", stacklevel=1)
    return out


def check(out: Path, name: str) -> str:
    log = (out / f"{name}.log").read_text()
    assert (out / f"{name}.rc").read_text().strip() == "0", log[-3000:]
    return log


def bundles(results: Path) -> list[Bundle]:
    found = [load_bundle(m.parent) for m in sorted(results.glob("**/manifest.json"))]
    assert found, f"no bundle under {results}"
    return found


def assert_kvm(bundle: Bundle) -> None:
    m = bundle.manifest
    assert m.status == "complete" and m.accel == "kvm" and m.timing == "realtime", bundle.path
    assert [k.clocksource for k in m.kernels] == ["kvm-clock"] * len(m.kernels)
    assert all(r.ok for r in bundle.expectations), [r for r in bundle.expectations if not r.ok]


def test_doctor_says_kvm_works(checks):
    assert "accelerator: kvm (a guest kernel booted under KVM" in check(checks, "doctor")


def test_make_run_scenario_gives_a_complete_kvm_bundle(checks):
    check(checks, "run-scenario")
    (bundle,) = bundles(checks / "run-scenario")
    assert_kvm(bundle)
    assert "kernel_log_clean" in {r.name for r in bundle.expectations}


def test_require_accel_kvm_passes_and_icount_becomes_realtime_with_one_note(checks):
    log = check(checks, "require-accel")
    assert log.count("timing icount needs TCG") == 1
    (bundle,) = bundles(checks / "require-accel")
    assert_kvm(bundle)
    assert [k.spec for k in bundle.manifest.kernels] == ["stock", "base+zeroing-stats"]
    assert [r.ok for r in bundle.expectations if r.name == "require_accel"] == [True, True]


def test_the_nightly_workflow_steps_work_on_kvm(checks):
    for name in ("plan", "merge", "report"):
        check(checks, name)
    shards = sorted(p.stem for p in checks.glob("run-shard-*.rc"))
    assert len(shards) == 2
    for name in shards:
        check(checks, name)
    merge = read_model(checks / "merged" / "merge.json", Merge, "merge.json")
    assert merge.cells and all(c.status == "complete" for c in merge.cells)
    for cell in merge.cells:
        assert_kvm(load_bundle(checks / "merged" / cell.bundle))
    assert (checks / "report" / "index.html").stat().st_size > 0
