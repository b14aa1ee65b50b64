"""A run that fails half-way (a guest that hangs or oopses on the stale data it handed out) keeps the leak it
already read as its first finding, not only the failure."""

from __future__ import annotations

import io

from rich.console import Console

from harness.results.scenario_run import _leaks_before_the_failure
from harness.results.writer import BundleWriter


def test_a_leak_read_before_the_failure_leads_the_error(tmp_path):
    bundle = BundleWriter(tmp_path, "stale-data-postcopy", ["seed002-split"])
    bundle.add_metric("nonzero_pages", 0, phase="touch-reported", rep=1, kernel="baseline")
    bundle.add_metric("nonzero_pages", 59121, phase="touch-reported", rep=1, kernel="seed002-split")
    bundle.add_metric("fault_in_ms", 974.0, phase="touch-reported", rep=1, kernel="seed002-split")
    out = io.StringIO()
    found = _leaks_before_the_failure(bundle, Console(file=out, width=200))
    assert found == ["LEAK on seed002-split: rep1 touch-reported: 59121 non-zero pages"]
    assert "LEAK" in out.getvalue() and "before the run failed" in out.getvalue()


def test_no_leak_no_finding(tmp_path):
    bundle = BundleWriter(tmp_path, "s", ["baseline"])
    bundle.add_metric("nonzero_pages", 0, phase="touch", rep=1, kernel="baseline")
    assert _leaks_before_the_failure(bundle, Console(file=io.StringIO())) == []
