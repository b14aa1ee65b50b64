"""The seeds' patch series on real guests (make test-kernels): each applies, builds (cached) and boots,
its counters move, each scenario shows what its series claims, and the stale-data check catches the
negative control.  Slow when cold: every series is a kernel build."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.kernels.spec import parse_kernel_spec
from harness.paths import REPO_ROOT
from harness.results.scenario_run import run_scenario

pytestmark = [pytest.mark.vm, pytest.mark.kernelbuild, pytest.mark.kernels]

STATS = "base+zeroing-stats"
SERIES_SPECS = [
    STATS,
    f"{STATS}+balloon-opt-ins+host-zeroed-reporting",
    f"{STATS}+balloon-opt-ins+host-zeroed-reporting+reported-split-keep",
    f"{STATS}+thp-gfp-zero+balloon-opt-ins+host-zeroed-reporting+reported-split-keep+reported-thp",
    f"{STATS}+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+deflate-zeroed-hint",
    f"{STATS}+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed",
    f"{STATS}+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed+pg-zeroed-reporting",
    f"{STATS}+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed+init-on-free-thp",
    f"{STATS}+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed+free-contig-range",
    f"{STATS}+fpi-free-unref-page+free-contig-range",
]
NEGATIVE_CONTROL = f"{STATS}+balloon-opt-ins+host-zeroed-reporting+broken-trust-host"
PAGES_64M = 64 * 256

COUNTERS = {
    "name": "counters",
    "guest": {"memory": "1G", "cpus": 2},
    "steps": [
        {"memtouch": "64M", "phase": "touch4k"},
        {"memtouch": {"size": "64M", "thp": True}, "phase": "touchthp"},
    ],
    "expect": {"nonzero_pages": 0},
}
ZEROING_COUNTERS = ("pgzero_alloc", "pgzero_free", "pgzero_user_huge", "pgzero_skip_reported",
                    "pgzero_skip_deflated", "pgzero_skip_initfree", "page_reporting_pages")


def metrics_of(bundle):
    rows = json.loads((bundle / "metrics.json").read_text())
    return {(m["name"], m["phase"]): m["value"] for m in rows}


@pytest.mark.parametrize("spec", SERIES_SPECS)
def test_series_builds_boots_and_counts_zeroing(spec, tmp_path):
    scenario = tmp_path / "counters.yaml"
    scenario.write_text(yaml.safe_dump(COUNTERS))
    outcome = run_scenario(scenario, kernels=[parse_kernel_spec(spec)], results_dir=tmp_path)
    assert outcome.ok, outcome.error
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    (kernel,) = manifest["kernels"]
    assert kernel["zeroing_counters"] == "vmstat"
    assert [s["name"] for s in kernel["series"]] == spec.split("+")[1:]
    slug = kernel["slug"]
    vmstat = (outcome.bundle / slug / "rep1" / "vmstat-boot.txt").read_text()
    for counter in ZEROING_COUNTERS:
        assert f"\n{counter} " in vmstat, counter
    m = metrics_of(outcome.bundle)

    def zeroed_or_skipped(phase):
        # The zeroing series zero anonymous THPs in the page allocator (pgzero_alloc) rather than in
        # folio_zero_user() (pgzero_user_huge), so count both.
        counters = ("pgzero_alloc", "pgzero_user_huge", "pgzero_skip_reported", "pgzero_skip_deflated",
                    "pgzero_skip_initfree")
        return sum(m.get((f"vmstat.{c}", phase), 0) for c in counters)

    # Every faulted-in page was zeroed (or its zeroing skipped as known zero): 16384 pages each.
    assert zeroed_or_skipped("touch4k") >= PAGES_64M
    assert zeroed_or_skipped("touchthp") >= PAGES_64M
    assert m[("vmstat.thp_fault_alloc", "touchthp")] >= 1


@pytest.mark.parametrize("name", ["reporting", "deflate", "init-on-free", "free-contig-range", "stale-data",
                                  "reporting-unregister"])
def test_scenario_shows_what_the_series_claims(name, tmp_path):
    outcome = run_scenario(REPO_ROOT / "scenarios" / f"{name}.yaml", results_dir=tmp_path)
    print(f"{name}: {outcome.bundle}")
    assert outcome.ok, outcome.error


# The seed designs in realistic configurations and the contig benchmark at the published size: one
# repetition checks what they claim (the READMEs' figures come from full runs of the same files).
@pytest.mark.parametrize("name", ["config-init-on-alloc", "config-init-on-free", "config-page-poison",
                                  "free-contig-range-orders"])
def test_configuration_scenario_holds_in_one_repetition(name, tmp_path):
    outcome = run_scenario(REPO_ROOT / "scenarios" / f"{name}.yaml", reps=1, results_dir=tmp_path)
    print(f"{name}: {outcome.bundle}")
    assert outcome.ok, outcome.error


def test_reporting_unregister_catches_a_kernel_that_keeps_trusting(tmp_path):
    """pg-zeroed-reporting without its patch 2 keeps its PG_zeroed marks trusted after the reporting device
    unregisters: the scenario that checks trust is withdrawn must fail on it (issue 20, item 13)."""
    old = f"{STATS}+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed+pg-zeroed-reporting@1"
    outcome = run_scenario(REPO_ROOT / "scenarios" / "reporting-unregister.yaml", kernels=[parse_kernel_spec(old)],
                           results_dir=tmp_path)
    assert not outcome.ok
    m = metrics_of(outcome.bundle)
    assert m[("vmstat.page_reporting_pages", "reporting")] > 0
    assert m[("vmstat.pgzero_skip_reported", "touch")] > 0, "the old kernel should still skip reported blocks"


def test_negative_control_is_caught_by_the_stale_data_check(tmp_path):
    outcome = run_scenario(REPO_ROOT / "scenarios" / "stale-data.yaml", kernels=[parse_kernel_spec(NEGATIVE_CONTROL)],
                           results_dir=tmp_path)
    assert not outcome.ok
    assert outcome.error.startswith(f"LEAK on {NEGATIVE_CONTROL}: rep1 touch-reported:"), outcome.error
    m = metrics_of(outcome.bundle)
    assert m[("stale_pattern_pages", "touch-reported")] > 0, "the leaked pages should hold memdirty's pattern"


@pytest.mark.parametrize("kernel, trusts", [("baseline", None), ("seed002", "reported"), ("seed000", "deflated")])
def test_host_that_cannot_discard_makes_trusting_kernels_leak(kernel, trusts, tmp_path):
    """mem-lock=on: QEMU's discards fail.  The baseline never trusts the host and stays safe, to userspace and to
    the kernel's own __GFP_ZERO allocations (the zero_scan module); a kernel that trusts the host hands out stale
    data.  One run per kernel: a trusting kernel may also crash on the stale data it gave itself (seed 000's
    page tables), which fails its own run and is a finding too."""
    outcome = run_scenario(REPO_ROOT / "scenarios" / "stale-data-mlock.yaml", kernels=[parse_kernel_spec(kernel)], results_dir=tmp_path)
    m = metrics_of(outcome.bundle)
    if trusts is None:
        assert outcome.ok, outcome.error
        for phase in ("touch-reported", "touch-deflated", "touch-deflated-thp", "scan-kernel"):
            assert m[("nonzero_pages", phase)] == 0, phase
        assert m[("kernel_scanned_pages", "scan-kernel")] > 256 * 1024  # most of the 2 GiB guest
        return
    crashed = outcome.status == "failed" and "guest kernel failure" in (outcome.error or "")
    leaked = {phase: v for (name, phase), v in m.items() if name == "nonzero_pages" and v}
    assert leaked or crashed, (outcome.error, m)
    if trusts == "reported" and not crashed:
        # The kernel takes the same skip: whole reported blocks handed to __GFP_ZERO allocations unzeroed.
        assert m[("nonzero_pages", "scan-kernel")] > 0 and m[("stale_pattern_pages", "scan-kernel")] > 0, m


# Every design that keeps a known-zero hint, with the DEBUG_VM checks of where that hint may be
# (kernel_patches/zeroed-hint-checks), through the stale-data scenario: every expectation holds,
# kernel_log_clean included (no bad page, no warning).
DEBUG_VM_DESIGNS = ["seed002", "seed002-split", "seed002-ext", "seed000", "seed001", "seed001-reporting"]
CHECKS = "zeroed-hint-checks"
PLANTED_BUG = "test-zeroed-hint-left-on-merge"


def expectation(bundle, name):
    (row,) = [r for r in json.loads((bundle / "expectations.json").read_text()) if r["name"] == name]
    return row


@pytest.mark.parametrize("design", DEBUG_VM_DESIGNS)
def test_debug_vm_finds_no_misplaced_hint_in_the_design(design, tmp_path):
    outcome = run_scenario(REPO_ROOT / "scenarios" / "stale-data.yaml", kernels=[parse_kernel_spec(f"{design}+{CHECKS}%debug-vm")],
                           results_dir=tmp_path)
    print(f"{design}: {outcome.bundle}")
    assert outcome.ok, outcome.error
    assert expectation(outcome.bundle, "kernel_log_clean")["ok"]


@pytest.mark.parametrize("checks", [True, False], ids=["with-checks", "without-checks"])
def test_debug_vm_checks_fire_on_a_hint_left_on_a_merged_buddy(checks, tmp_path):
    """The planted bug (a merged buddy keeps PG_zeroed) is a bad-page report with the checks, and silent
    without them: the checks are what finds it."""
    spec = "control-hint-left-on-merge%debug-vm" if checks else f"seed001+{PLANTED_BUG}%debug-vm"
    outcome = run_scenario(REPO_ROOT / "scenarios" / "stale-data.yaml", kernels=[parse_kernel_spec(spec)], results_dir=tmp_path)
    print(f"{spec}: {outcome.bundle}")
    dmesg = "".join(p.read_text(errors="replace") for p in outcome.bundle.glob("*/rep*/dmesg.txt"))
    if checks:
        assert not outcome.ok
        assert not expectation(outcome.bundle, "kernel_log_clean")["ok"]
        # expand() warns when the stale hint is about to head a split-off half, check_new_pages() when a
        # merged block that still carries one is allocated whole.
        assert "page_has_zeroed_hint(&page[size])" in dmesg and "known-zero hint on a tail page" in dmesg
    else:
        assert "known-zero hint" not in dmesg
        assert expectation(outcome.bundle, "kernel_log_clean")["ok"], outcome.error


@pytest.mark.parametrize("spec", ["base+fpi-free-unref-page+free-contig-range"])
def test_legal_stack_without_the_counters_builds_and_boots(spec, tmp_path):
    """The legal stacks that do not carry zeroing-stats (so no vmstat counters to check) boot and fault cleanly."""
    scenario = tmp_path / "counters.yaml"
    scenario.write_text(yaml.safe_dump(COUNTERS))
    outcome = run_scenario(scenario, kernels=[parse_kernel_spec(spec)], results_dir=tmp_path)
    assert outcome.status == "complete", outcome.error
    manifest = json.loads((outcome.bundle / "manifest.json").read_text())
    (kernel,) = manifest["kernels"]
    assert [s["name"] for s in kernel["series"]] == spec.split("+")[1:]
    assert kernel["zeroing_counters"] == "trace"  # no pgzero_* counters: the trace method counts
    m = metrics_of(outcome.bundle)
    assert m[("nonzero_pages", "touch4k")] == 0 and m[("vmstat.thp_fault_alloc", "touchthp")] >= 1
    assert m[("zeroing.alloc_pages", "touch4k")] >= 64 * 256
    assert m[("zeroing.thp_pages", "touchthp")] == 512 * m[("vmstat.thp_fault_alloc", "touchthp")]
