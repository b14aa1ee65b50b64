"""The zeroing breakdown on real guests (make test-kernels): scenarios/zeroing-paths.yaml on seed 002 with
its extensions, where the paths must add up to what vmstat's pgzero_alloc counted; and the zeroing-sources
series applies right after zeroing-stats in every legal stack."""

from __future__ import annotations

import json

import pytest

from harness.kernels.stacks import load_stacks
from harness.paths import REPO_ROOT

pytestmark = [pytest.mark.kernels]

EXTENDED = ("base+zeroing-stats+zeroing-sources+thp-gfp-zero+balloon-opt-ins+host-zeroed-reporting"
            "+reported-split-keep+reported-thp")
# One guest command reads /proc/vmstat and then /proc/zeroing_sources, before and after the step: the
# windows differ only by what other CPUs allocate between the two reads (1 page in the runs here).
TOLERANCE_PAGES = 16
# Movable pages other processes allocate during the step (the shell, cat, memtouch's own stack): 54 here.
OTHER_USER_PAGES = 512


def _legal_stacks_with_the_counters() -> list[str]:
    """The legal stacks (kernel_patches/stacks.yaml) that carry zeroing-stats."""
    specs = [st.spec for st in load_stacks().values()]
    return [s for s in specs if "+zeroing-stats" in s and "zeroing-sources" not in s]


@pytest.mark.parametrize("spec", _legal_stacks_with_the_counters())
def test_zeroing_sources_applies_right_after_zeroing_stats(spec):
    from harness.kernels.inputs import load_base, load_stack
    from harness.kernels.spec import parse_kernel_spec
    from harness.kernels.tree import check_series_applies, ensure_base_repo

    instrumented = spec.replace("+zeroing-stats", "+zeroing-stats+zeroing-sources", 1)
    check_series_applies(ensure_base_repo(load_base()), load_stack(parse_kernel_spec(instrumented).series))


@pytest.mark.vm
@pytest.mark.kernelbuild
def test_zeroing_paths_add_up_to_pgzero_alloc(tmp_path):
    from harness.kernels.spec import parse_kernel_spec
    from harness.results.scenario_run import run_scenario

    outcome = run_scenario(REPO_ROOT / "scenarios" / "zeroing-paths.yaml", kernels=[parse_kernel_spec(EXTENDED)],
                           reps=1, results_dir=tmp_path)
    assert outcome.ok, outcome.error
    rows = json.loads((outcome.bundle / "metrics.json").read_text())
    m = {r["name"]: r["value"] for r in rows if r["phase"] == "touch4k"}
    zeroed, skipped = m["zeroing_paths.zeroed"], m["zeroing_paths.skipped"]
    print(f"touch4k: pgzero_alloc {m['vmstat.pgzero_alloc']}, paths {zeroed}; "
          f"pgzero_skip_reported {m['vmstat.pgzero_skip_reported']}, paths {skipped}")
    assert abs(zeroed - m["vmstat.pgzero_alloc"]) <= TOLERANCE_PAGES
    assert abs(skipped - m["vmstat.pgzero_skip_reported"]) <= TOLERANCE_PAGES
    from harness.guest.zeroing_paths import PARTS

    for outcome_name, total in (("zeroed", zeroed), ("skipped", skipped)):
        assert sum(m[f"zeroing_paths.{outcome_name}.{part}"] for part in PARTS) == total
    # 65536 user pages were faulted in: each was zeroed or skipped exactly once
    user = sum(m[f"zeroing_paths.{o}.{p}"] for o in ("zeroed", "skipped") for p in PARTS if p.startswith("user."))
    assert 65536 <= user <= 65536 + OTHER_USER_PAGES
