"""Every expectation on synthetic step records and metrics: what decides pass or fail, without a guest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.kernels.spec import parse_kernel_spec
from harness.scenario.expectations import check_kernel_names, evaluate
from harness.scenario.schema import parse_scenario
from harness.scenario.steps import RepResult, StepRecord


def specs(*texts: str) -> list:
    return [parse_kernel_spec(t) for t in texts]


class Metrics:
    def __init__(self, rows: dict[tuple[str, str, str], list[float]]):
        self.rows = rows  # (name, phase, kernel) -> values

    def values(self, name, phase=None, kernel=None):
        return [v for (n, p, k), vals in self.rows.items() for v in vals
                if n == name and phase in (None, p) and kernel in (None, k)]


def scenario(expect: dict, kernels=("stock",)):
    """A scenario with a step for each phase its metric and ratio checks name."""
    phases = {c["phase"] for group in ("metrics", "ratios") for c in expect.get(group, []) if c.get("phase")}
    steps = ["snapshot", *({"snapshot": None, "phase": phase} for phase in sorted(phases))]
    doc = {"name": "t", "kernels": list(kernels), "steps": steps, "expect": expect}
    return parse_scenario(doc, Path("t.yaml"))


def rep(kernel="stock", steps=(), problems=()):
    return RepResult(kernel, 1, steps=list(steps), kernel_problems=list(problems))


def balloon_step(actual, target=1024, start=2048, inflate_delta=None):
    delta = {} if inflate_delta is None else {"balloon_inflate": inflate_delta}
    return StepRecord("balloon", "inflate", {"actual_mib": actual, "target_mib": target, "start_mib": start,
                                             "inflate": target < start, "vmstat_delta": delta})


def rows(expect, results, metrics=None, kernels=("stock",)):
    out = evaluate(scenario(expect, kernels), Metrics(metrics or {}), results, list(kernels))
    return {(r["name"], r["kernel"]): r for r in out}


def test_balloon_reached():
    ok = rows({"balloon_reached": True}, [rep(steps=[balloon_step(1024)])])
    assert ok[("balloon_reached", "stock")]["ok"]
    bad = rows({"balloon_reached": True}, [rep(steps=[balloon_step(1100)])])
    assert not bad[("balloon_reached", "stock")]["ok"] and "1100.0/1024" in bad[("balloon_reached", "stock")]["detail"]
    none = rows({"balloon_reached": True}, [rep()])
    assert not none[("balloon_reached", "stock")]["ok"], "no balloon step is not a pass"


def test_balloon_inflate_matches():
    ok = rows({"balloon_inflate_matches": True}, [rep(steps=[balloon_step(1024, inflate_delta=1024 * 256)])])
    assert ok[("balloon_inflate_matches", "stock")]["ok"]
    bad = rows({"balloon_inflate_matches": True}, [rep(steps=[balloon_step(1024, inflate_delta=5)])])
    assert not bad[("balloon_inflate_matches", "stock")]["ok"]


def test_rss_fell_after_reporting():
    step = lambda drop: StepRecord("wait_reporting", "report", {"rss_drop_mib": drop})  # noqa: E731
    assert rows({"rss_fell_after_reporting": {"min_mib": 200}}, [rep(steps=[step(300)])])[
        ("rss_fell_after_reporting", "stock")]["ok"]
    bad = rows({"rss_fell_after_reporting": {"min_mib": 200}}, [rep(steps=[step(50)])])
    assert not bad[("rss_fell_after_reporting", "stock")]["ok"]
    assert not rows({"rss_fell_after_reporting": {}}, [rep()])[("rss_fell_after_reporting", "stock")]["ok"]


def touch(n):
    return StepRecord("memtouch", "touch", {"nonzero_pages": n, "pattern_pages": n, "first_nonzero_page": 7 if n else -1})


def test_a_leak_is_always_checked_and_named():
    ok = rows({}, [rep(steps=[touch(0)])])[("no_leak", "stock")]
    assert ok["ok"] and "every page handed out was zero" in ok["detail"]
    bad = rows({}, [rep(steps=[touch(3)])])[("no_leak", "stock")]
    assert not bad["ok"] and bad["detail"].startswith("LEAK: rep1 touch: 3 non-zero pages")
    assert "first at page 7" in bad["detail"]
    assert ("no_leak", "stock") not in rows({}, [rep()]), "no memtouch, nothing to judge"


def test_a_declared_leak_is_reported_and_must_happen():
    declared = {"expected_leaks": [{"kernel": "stock", "why": "negative control"}]}
    seen = rows(declared, [rep(steps=[touch(3)])])
    assert ("no_leak", "stock") not in seen
    assert seen[("expected_leak", "stock")]["ok"] and "negative control" in seen[("expected_leak", "stock")]["detail"]
    missed = rows(declared, [rep(steps=[touch(0)])])[("expected_leak", "stock")]
    assert not missed["ok"] and "found only zero pages" in missed["detail"]


def test_nonzero_pages():
    assert rows({"nonzero_pages": 0}, [rep(steps=[touch(0)])])[("nonzero_pages", "stock")]["ok"]
    bad = rows({"nonzero_pages": 0}, [rep(steps=[touch(3)])])[("nonzero_pages", "stock")]
    assert not bad["ok"] and "3 non-zero pages" in bad["detail"]


def test_kernel_log_clean_is_on_by_default():
    assert rows({}, [rep()])[("kernel_log_clean", "stock")]["ok"]
    bad = rows({}, [rep(problems=["BUG: Bad page state"])])[("kernel_log_clean", "stock")]
    assert not bad["ok"] and "Bad page state" in bad["detail"]
    assert ("kernel_log_clean", "stock") not in rows({"kernel_log_clean": False}, [rep(problems=["BUG: x"])])


def test_kernel_log_checks_every_boot_for_the_text():
    expect = {"kernel_log": [{"kernel": "stock", "contains": "not trusting host"},
                             {"kernel": "stock", "contains": "Oops", "present": False}]}
    both = [RepResult("stock", 1, kernel_log="virtio: not trusting host to zero"),
            RepResult("stock", 2, kernel_log="nothing here")]
    out = evaluate(scenario(expect), Metrics({}), both, ["stock"])
    want, forbid = [r for r in out if r["name"] == "kernel_log"]
    assert not want["ok"] and want["detail"].startswith("rep2: dmesg lacks 'not trusting host'")
    assert forbid["ok"] and "every boot (2) does not print 'Oops'" in forbid["detail"]
    assert not [r for r in evaluate(scenario(expect), Metrics({}), [], ["stock"]) if r["name"] == "kernel_log"][0]["ok"]


def test_metric_checks():
    metrics = {("sys_ms", "touch", "stock"): [10.0, 12.0, 11.0]}
    check = lambda **b: rows({"metrics": [{"name": "sys_ms", "phase": "touch", **b}]}, [rep()], metrics)  # noqa: E731
    assert check(max=11)[("sys_ms@touch", "stock")]["ok"]
    assert not check(max=10.5)[("sys_ms@touch", "stock")]["ok"]
    assert check(min=11, max=11)[("sys_ms@touch", "stock")]["detail"] == "median 11 (min 11, max 11)"
    missing = rows({"metrics": [{"name": "nope", "max": 1}]}, [rep()], metrics)[("nope", "stock")]
    assert not missing["ok"] and missing["detail"] == "metric was not recorded"


def test_big_medians_are_written_for_people():
    metrics = {("vmstat.pgzero_alloc", "touch", "stock"): [34697200.0]}
    row = rows({"metrics": [{"name": "vmstat.pgzero_alloc", "phase": "touch", "min": 1}]}, [rep()], metrics)
    assert row[("vmstat.pgzero_alloc@touch", "stock")]["detail"] == "median 34697200 (min 1)"


def test_ratio_checks():
    kernels = ("base", "base+x")
    metrics = {("sys_ms", "touch", "base"): [100.0], ("sys_ms", "touch", "base+x"): [70.0]}
    expect = {"ratios": [{"name": "sys_ms", "phase": "touch", "kernel": "base+x", "baseline": "base",
                          "max_ratio": 0.8}]}
    results = [rep("base"), rep("base+x")]
    assert rows(expect, results, metrics, kernels)[("sys_ms@touch vs base", "base+x")]["ok"]
    expect["ratios"][0]["max_ratio"] = 0.5
    assert not rows(expect, results, metrics, kernels)[("sys_ms@touch vs base", "base+x")]["ok"]


def test_checks_on_kernels_a_kernel_override_left_out_are_skipped():
    expect = {"metrics": [{"name": "sys_ms", "kernel": "base+x", "max": 1}]}
    s = scenario(expect, kernels=("base", "base+x"))
    check_kernel_names(s, specs("base"))  # --kernel base: the check on base+x is skipped, not an error
    out = evaluate(s, Metrics({}), [rep("base")], ["base"])
    assert not [r for r in out if r["kernel"] == "base+x"]


def test_a_check_naming_a_kernel_nobody_runs_is_bad_input():
    s = scenario({"ratios": [{"name": "sys_ms", "kernel": "base+typo", "baseline": "base", "max_ratio": 1}]},
                 kernels=("base", "base+x"))
    with pytest.raises(InputError, match=r"t.yaml: expect.ratios\[0\].kernel: 'base\+typo' is not a kernel"):
        check_kernel_names(s, specs("base", "base+x"))
    check_kernel_names(s, specs("base", "base+typo"))  # named with --kernel: known


def test_cli_rejects_an_expectation_on_an_unknown_kernel(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "steps": ["snapshot"],
                                    "expect": {"metrics": [{"name": "x", "kernel": "stokc", "min": 1}]}}))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "expect.metrics[0].kernel: 'stokc'" in proc.stderr
    assert not (tmp_path / "r").exists()
