"""Judging one bisect candidate from its samples (attribution/judge.py), on synthetic samples."""

from __future__ import annotations

import pytest

from harness.attribution.judge import Criterion, judge_metric
from harness.attribution.search import BAD, GOOD
from harness.errors import InputError

FAULT = Criterion(metric="fault_in_ms", phase="touch")  # a time, better lower
GOOD_SIDE = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]


@pytest.mark.parametrize("metric, expect, message", [
    (None, None, "exactly one"),
    ("fault_in_ms@touch", "nonzero_pages", "exactly one"),
    ("fault_in_ms", None, "NAME@PHASE"),
    ("@touch", None, "NAME@PHASE"),
])
def test_a_criterion_needs_exactly_one_well_formed_choice(metric, expect, message):
    with pytest.raises(InputError, match=message):
        Criterion.parse(metric, expect, 5.0)


def test_a_criterion_names_what_it_judges():
    assert Criterion.parse("fault_in_ms@touch", None, 5.0).describe() == "fault_in_ms@touch"
    assert Criterion.parse(None, "nonzero_pages", 5.0).describe() == "expectation nonzero_pages"


def test_quiet_icount_timings_are_significant_at_three_a_side():
    v = judge_metric(FAULT, [100.0, 100.1, 100.2], [103.0, 103.1, 103.2], deterministic=True, direction=None)
    assert v.verdict == BAD and v.direction == 1
    assert "+3.0%" in v.evidence and "n 3/3" in v.evidence


def test_realtime_timings_at_three_a_side_are_not_yet_significant():
    # Mann-Whitney with 3 a side can never reach p < 0.05: more repetitions, never a silent "good"
    v = judge_metric(FAULT, GOOD_SIDE[:3], [120.0, 121.0, 119.0], deterministic=False, direction=None)
    assert v.verdict is None and "too-few-samples" in v.evidence


def test_a_change_above_the_threshold_that_is_not_significant_asks_for_more():
    good = [100.0, 130.0, 100.0, 130.0]
    step = [105.0, 140.0, 105.0, 140.0]  # medians 115 -> 122.5 (+6.5 %), overlapping: p > 0.05
    v = judge_metric(FAULT, good, step, deterministic=False, direction=1)
    assert v.verdict is None and "not significant yet" in v.evidence


def test_a_candidate_that_moved_the_same_way_as_the_bad_end_is_bad():
    v = judge_metric(FAULT, GOOD_SIDE, [x * 1.2 for x in GOOD_SIDE], deterministic=False, direction=1)
    assert v.verdict == BAD and "p 0.0022" in v.evidence


def test_a_candidate_that_moved_the_other_way_is_good():
    v = judge_metric(FAULT, GOOD_SIDE, [x * 0.8 for x in GOOD_SIDE], deterministic=False, direction=1)
    assert v.verdict == GOOD and "moved the other way" in v.evidence
    # and a noisy move the other way is not worth more repetitions either
    v = judge_metric(FAULT, [100.0, 130.0, 100.0, 130.0], [95.0, 120.0, 95.0, 120.0], deterministic=False, direction=1)
    assert v.verdict == GOOD


def test_a_change_below_the_threshold_is_good():
    v = judge_metric(FAULT, GOOD_SIDE, [x * 1.01 for x in GOOD_SIDE], deterministic=False, direction=1)
    assert v.verdict == GOOD and "unchanged" in v.evidence


def test_a_counter_is_judged_by_no_overlap_at_one_sample():
    c = Criterion(metric="nonzero_pages", phase="touch")
    assert judge_metric(c, [0.0], [53.0], deterministic=False, direction=None).verdict == BAD
    assert judge_metric(c, [0.0], [0.0], deterministic=False, direction=1).verdict == GOOD

