"""The metric names an expectation may name are those the code records: every name the steps record has a
definition in harness.results.metrics (found by reading the step modules' own `metric(...)` calls), and a
name nothing records is refused."""

from __future__ import annotations

import ast

import pytest

from harness.guest import kselftest, probes, zeroing, zeroing_paths
from harness.paths import REPO_ROOT
from harness.results.bundle import load_bundle
from harness.results.metrics import definition, is_recorded
from harness.scenario import migration_steps
from harness.scenario.probe_steps import PROBE_METRICS

STEPS = [REPO_ROOT / "harness" / "scenario" / name for name in ("steps.py", "probe_steps.py", "migration_steps.py", "workload_steps.py")]


def metric_calls() -> tuple[set[str], list[str]]:
    """(names written literally, source of every name computed) in the steps' metric(...) calls."""
    literal, computed = set(), []
    for node in (n for path in STEPS for n in ast.walk(ast.parse(path.read_text()))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "metric"
                and node.args):
            arg = node.args[0]
            names = [] if isinstance(arg, ast.JoinedStr) else [
                c.value for c in ast.walk(arg) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            literal.update(names)
            if not names:
                computed.append(ast.unparse(arg))
    return literal, computed


def computed_names() -> set[str]:
    """Every name the computed calls can produce, from the constants of the code that makes them."""
    names = {f"vmstat.{t}" + ("x" if t.endswith("_") else "") for t in probes.VMSTAT_TRACKED}
    names |= {f"kselftest_{r}" for r in (kselftest.PASS, kselftest.FAIL, kselftest.SKIP)}
    names |= {zeroing.ALLOC, zeroing.FREE, zeroing.THP}
    names |= set(zeroing_paths.breakdown({}, 0)) | {f"{zeroing_paths.PREFIX}.start.pcp_pages"}
    out = {"wall_ms": 1, "user_ms": 1, "sys_ms": 1, "ops_per_s": 1}
    names |= {n for probe in PROBE_METRICS.values() for n in probe(out)}
    names |= {f"{prefix}_{figure}" for prefix in (migration_steps.MIGRATION, migration_steps.SNAPSHOT)
              for figure in migration_steps.FIGURES}
    return names


def test_every_metric_the_steps_record_is_defined_and_recordable():
    literal, computed = metric_calls()
    assert {"boot_to_ssh_s", "nonzero_pages", "rss_drop_mib", "balloon_inflate_s", "balloon_deflate_s"} <= literal
    # A new computed name must be added to computed_names() above, or this test cannot see it.
    assert sorted(computed) == ["f'kselftest_{result}'", "f'vmstat.{name}'", "f'{prefix}_{name}'", "name", "name",
                                "name"]
    for name in literal | computed_names():
        assert is_recorded(name), name
        assert definition(name).doc != "unknown metric", name


def test_names_no_run_records():
    for name in ("fault_in_msec", "x", "vmstat.nr_free_pages", "kprobe.clear_page_erms", "zeroing.nothing"):
        assert not is_recorded(name), name
    assert is_recorded("vmstat.pgzero_skip_reported") and is_recorded("zeroing_paths.zeroed.user.via_pcp")


@pytest.mark.vm
def test_every_metric_a_real_run_recorded_is_one_an_expectation_may_name(smoke_bundles):
    names = {m.name for b in smoke_bundles for m in load_bundle(b).metrics}
    assert {"boot_to_ssh_s", "fault_in_ms", "rss_drop_mib"} <= names
    assert not sorted(n for n in names if not is_recorded(n))
