"""A/A calibration: which bundles count as A/A, the threshold each metric gets, and compare using it."""

import json

import bundle_synth as synth
import pytest

from harness.results import stats
from harness.results.bundle import load_bundle
from harness.results.calibration import CV_FACTOR, FLOOR_PCT, Calibration, aa_sides, runner_kind
from harness.results.compare import run_compare
from harness.results.history import load_night
from harness.results.model import KernelRecord, MetricRow


def twin_bundle(path, a_vals, b_vals, name="fault_in_ms", phase="touch", **kw):
    """One kernel twice (same spec, slugs stock and stock-aa): what an A/A cell of a matrix writes."""
    synth.write_bundle(path, {"stock": {(name, phase): a_vals}}, **kw)
    b = load_bundle(path)
    b.manifest.kernels = [*b.manifest.kernels, KernelRecord(spec="stock", slug="stock-aa")]
    b.metrics += [MetricRow.measured(name, float(v), phase=phase, rep=i, kernel="stock-aa")
                  for i, v in enumerate(b_vals)]
    b.write(path)
    return load_bundle(path)


def test_shared_spec_bundle_is_aa_and_sets_threshold(tmp_path):
    night = tmp_path / "night"
    b = twin_bundle(night / "20261130T010000Z-aa", [100, 110, 90, 100], [105, 95, 100, 120])
    sides = aa_sides(b, named_aa=False)
    assert sides == [({("fault_in_ms", "touch"): [100, 110, 90, 100]},
                      {("fault_in_ms", "touch"): [105, 95, 100, 120]})]
    cal = Calibration.from_nights([load_night(night)])
    (t,) = cal.thresholds(runner_kind(b)).values()
    s = stats.summarize([100, 110, 90, 100, 105, 95, 100, 120])
    assert t.pct == pytest.approx(max(FLOOR_PCT, CV_FACTOR * s.cv * 100, 2.5))
    assert t.source.startswith("A/A night/20261130T010000Z-aa: CV ")


def test_named_aa_cells_and_bench_noise_split_their_repetitions(tmp_path):
    night = tmp_path / "2026-11-30"
    synth.write_bundle(night / "b1", {"base": {("sys_ms", "touch"): [10, 20, 10, 20]}})
    synth.write_bundle(night / "b2", {"base": {("sys_ms", "touch"): [10, 20, 10, 20]}})
    synth.write_bundle(night / "b3", {"base": {("sys_ms", "touch"): [10, 10, 11, 11]}}, scenario="aa-noise")
    (night / "merge.json").write_text(json.dumps({"plan": {}, "merged_at": "x", "runners": {}, "cells": [
        {"id": "c1", "scenario": "smoke", "kernels": ["base"], "shard": "s", "bundle": "b1", "aa": True},
        {"id": "c2", "scenario": "smoke", "kernels": ["base"], "shard": "s", "bundle": "b2"}]}))
    n = load_night(night)
    assert [n.named_aa(b) for b in n.bundles] == [True, False, True]
    assert list(n.latest_per_scenario()) == ["smoke"]  # A/A runs are calibration, not a scenario card
    obs = Calibration.from_nights([n]).observations
    ((kind, found),) = obs.items()
    assert sorted(o.bundle for o in found) == ["b1", "b3"]
    b1 = next(o for o in found if o.bundle == "b1")
    assert b1.change_pct == 100.0  # sides [10, 10] and [20, 20]


def test_compare_uses_calibrated_threshold_and_names_it(tmp_path):
    night = tmp_path / "night"
    twin_bundle(night / "aa", [100, 101, 99, 100], [100, 100, 101, 99])  # quiet: about 1 %
    noisy = twin_bundle(tmp_path / "noisy" / "aa", [100, 130, 80, 100], [90, 120, 100, 70])
    ab = load_bundle(synth.write_bundle(tmp_path / "ab", {
        "stock": {("fault_in_ms", "touch"): [100, 101, 100, 99, 100]},
        "base": {("fault_in_ms", "touch"): [104, 103, 104, 105, 104]}}))
    fixed = run_compare(ab, None, 5.0)[0].rows[0]
    assert fixed.judgement.verdict == stats.UNCHANGED and fixed.threshold_source == "fixed 5 %"
    quiet = Calibration.from_nights([load_night(night)])
    row = run_compare(ab, None, 5.0, quiet.threshold_for(ab, 5.0))[0].rows[0]
    assert row.judgement.verdict == stats.REGRESSION and row.threshold_pct < 4
    assert row.to_json()["threshold_source"].startswith("A/A night/aa")
    loud = Calibration.from_nights([load_night(noisy.path.parent)])
    assert loud.threshold_for(ab, 5.0)("fault_in_ms", "touch").pct > 20
    # another phase of a timing borrows it; a counter never does; another runner kind gets the default
    assert "(another phase)" in quiet.threshold_for(ab, 5.0)("fault_in_ms", "touch4k").source
    assert quiet.threshold_for(ab, 5.0)("vmstat.pgzero_alloc", "touch").source == "fixed 5 %"
    other = load_bundle(synth.write_bundle(tmp_path / "tcg", {"stock": {("fault_in_ms", "touch"): [1]}},
                                           accel="tcg"))
    assert quiet.threshold_for(other, 5.0)("fault_in_ms", "touch").source == "fixed 5 %"


def test_no_aa_run_means_no_calibration(tmp_path):
    synth.write_bundle(tmp_path / "n" / "ab", {"stock": {("fault_in_ms", "touch"): [1, 2]},
                                               "base": {("fault_in_ms", "touch"): [1, 2]}})
    assert not Calibration.from_nights([load_night(tmp_path / "n")])


def test_an_aa_scenario_calibrates_its_own_scenarios_counters_only(tmp_path):
    synth.write_bundle(tmp_path / "n" / "aa", {"stock": {("vmstat.pgfault", "touch"): [100, 110, 100, 110],
                                                         ("sys_ms", "touch"): [10, 10, 10, 10]}}, scenario="aa-smoke")
    cal = Calibration.from_nights([load_night(tmp_path / "n")])
    smoke = load_bundle(synth.write_bundle(tmp_path / "s", {"stock": {}}, scenario="smoke"))
    other = load_bundle(synth.write_bundle(tmp_path / "r", {"stock": {}}, scenario="reporting"))
    assert cal.threshold_for(smoke, 5.0)("vmstat.pgfault", "touch").source.startswith("A/A n/aa")
    assert cal.threshold_for(other, 5.0)("vmstat.pgfault", "touch").source == "fixed 5 %"
    assert cal.threshold_for(other, 5.0)("sys_ms", "touch").source.endswith("(another scenario)")
    assert cal.threshold_for(other, 5.0)("sys_ms", "touch").pct == FLOOR_PCT
