"""The loop that judges one bisect step over rounds of repetitions (attribution/rounds.py).

The runner is injected: a function of the number of repetitions that hands out synthetic samples, so each
test knows the answer and how many repetitions it must have cost.
"""

from __future__ import annotations

import math

import bundle_synth as synth
import pytest

from harness.attribution.judge import Criterion
from harness.attribution.rounds import (
    Round,
    confidence_after,
    crash_line,
    failed_reps,
    judge_step,
    reps_for_confidence,
    round_from_bundle,
    smallest_rate_seen,
)
from harness.attribution.search import BAD, GOOD, SKIP, UNKNOWN
from harness.results.bundle import load_bundle
from harness.results.model import ExpectationRow

FAULT = Criterion(metric="fault_in_ms", phase="touch")
LEAKS = Criterion(expect="nonzero_pages")
NOISY_GOOD, NOISY_STEP = [100.0, 200.0, 150.0, 120.0], [112.0, 210.0, 160.0, 125.0]


class Runner:
    """run_round(reps): the next `reps` samples of each side from two endless lists; records every call."""

    def __init__(self, good, step, *, deterministic=False):
        self.good, self.step, self.deterministic = list(good), list(step), deterministic
        self.calls: list[int] = []

    def __call__(self, reps: int) -> Round:
        done = sum(self.calls)
        self.calls.append(reps)
        pick = lambda xs: [xs[i % len(xs)] for i in range(done, done + reps)]  # noqa: E731
        return Round(reps, good=pick(self.good), step=pick(self.step), deterministic=self.deterministic)


class Failures:
    """An expectation runner: repetition i (from 0) fails when fails(i)."""

    def __init__(self, fails):
        self.fails = fails
        self.calls: list[int] = []

    def __call__(self, reps: int) -> Round:
        done = sum(self.calls)
        self.calls.append(reps)
        failed = sum(1 for i in range(done, done + reps) if self.fails(i))
        return Round(reps, failed=failed, detail=f"{failed} repetitions with non-zero pages")


def judge(c, runner, *, reps=3, max_reps=12, direction=1, **kw):
    return judge_step(c, runner, reps=reps, max_reps=max_reps, direction=direction, say=lambda line: None, **kw)


# -- metric: more repetitions while not yet significant ---------------------------------------------------


def test_significant_at_three_repetitions_needs_one_round():
    runner = Runner([100.0, 100.1, 100.2], [104.0, 104.1, 104.2], deterministic=True)
    v = judge(FAULT, runner, direction=None)
    assert v.verdict == BAD and v.direction == 1
    assert runner.calls == [3]


def test_significant_only_after_more_repetitions():
    # realtime: 3 a side can never be significant (Mann-Whitney), 6 a side can
    runner = Runner([100.0, 101.0, 99.0], [120.0, 121.0, 119.0])
    v = judge(FAULT, runner, direction=None)
    assert v.verdict == BAD and "n 6/6" in v.evidence
    assert runner.calls == [3, 3]


def test_never_significant_is_unknown_after_max_reps():
    # the candidate is 5.6 % slower in the median (threshold 5 %), but the two overlap: p 0.31 at 12 a side
    runner = Runner(NOISY_GOOD, NOISY_STEP)
    v = judge(FAULT, runner, direction=1, max_reps=12)
    assert v.verdict == UNKNOWN and "not significant after 12 repetitions a side" in v.evidence
    assert runner.calls == [3, 3, 6]


def test_the_rounds_stop_at_max_reps_even_when_it_is_not_a_doubling():
    runner = Runner(NOISY_GOOD, NOISY_STEP)
    v = judge(FAULT, runner, direction=1, max_reps=8)
    assert v.verdict == UNKNOWN and runner.calls == [3, 3, 2]


def test_no_change_is_good_at_once():
    runner = Runner([100.0, 100.5, 99.5], [100.2, 100.4, 99.8], deterministic=True)
    assert judge(FAULT, runner).verdict == GOOD and runner.calls == [3]


def test_a_metric_that_was_not_recorded_is_unknown():
    runner = Runner([], [])
    v = judge(FAULT, lambda reps: Round(reps))
    assert v.verdict == UNKNOWN and "was not recorded" in v.evidence and runner.calls == []


# -- crashes and harness errors ----------------------------------------------------------------------------


def test_a_crashed_candidate_is_bad_by_default_and_skipped_on_request():
    crashed = lambda reps: Round(reps, crashed="Kernel panic - not syncing: VFS: Unable to mount root fs")  # noqa: E731
    v = judge(FAULT, crashed)
    assert v.verdict == BAD and "Kernel panic" in v.evidence
    v = judge(FAULT, crashed, panic=SKIP)
    assert v.verdict == SKIP and "--panic skip" in v.evidence


def test_a_harness_error_is_a_skip_never_a_verdict():
    v = judge(LEAKS, lambda reps: Round(reps, error="guest did not boot within 180 s"))
    assert v.verdict == SKIP and "harness error" in v.evidence


# -- expectation: a good verdict sized by the bad end's failure rate ---------------------------------------


@pytest.mark.parametrize("rate, n", [(1.0, 1), (0.5, 5), (1 / 3, 8), (0.1, 29), (0.05, 59)])
def test_repetitions_for_95_percent_confidence(rate, n):
    assert reps_for_confidence(rate) == n
    assert confidence_after(rate, n) >= 0.95
    assert n == 1 or confidence_after(rate, n - 1) < 0.95
    assert n == math.ceil(math.log(0.05) / math.log(1 - rate)) if rate < 1 else True


def test_three_clean_runs_rule_out_only_frequent_failures():
    assert smallest_rate_seen(3) == pytest.approx(0.632, abs=0.001)
    assert smallest_rate_seen(10) == pytest.approx(0.259, abs=0.001)


def test_a_clean_candidate_runs_until_a_sometimes_failing_bug_would_have_shown():
    runner = Failures(lambda i: False)
    v = judge(LEAKS, runner, bad_fail_rate=1 / 3)  # the bad end failed 1 run in 3
    assert v.verdict == GOOD and runner.calls == [3, 5]
    assert v.confidence == pytest.approx(1 - (2 / 3) ** 8) and "96%" in v.evidence


def test_a_candidate_that_fails_in_a_later_round_is_bad():
    runner = Failures(lambda i: i == 5)
    v = judge(LEAKS, runner, bad_fail_rate=1 / 3)
    assert v.verdict == BAD and v.failed == (1, 5) and runner.calls == [3, 5]


def test_the_clean_repetitions_are_capped_by_max_reps_and_say_so():
    runner = Failures(lambda i: False)
    v = judge(LEAKS, runner, bad_fail_rate=0.1, max_reps=12)
    assert v.verdict == GOOD and runner.calls == [3, 9]
    assert v.confidence == pytest.approx(1 - 0.9 ** 12) and "capped by --max-reps" in v.evidence


def test_a_bug_that_always_fails_needs_no_more_than_the_first_round():
    runner = Failures(lambda i: False)
    v = judge(LEAKS, runner, bad_fail_rate=1.0)
    assert v.verdict == GOOD and v.confidence == 1.0 and runner.calls == [3]


def test_the_bad_end_reports_its_failure_rate():
    runner = Failures(lambda i: i == 1)
    v = judge(LEAKS, runner, direction=None)
    assert v.verdict == BAD and v.failed == (1, 3) and "1/3 repetitions failed" in v.evidence


def test_without_a_failure_rate_the_verdict_says_what_it_rules_out():
    runner = Failures(lambda i: False)
    v = judge(LEAKS, runner, reps=10)
    assert v.verdict == GOOD and v.confidence is None and runner.calls == [10]
    assert "26% of runs or more would have shown" in v.evidence


def test_an_expectation_the_run_did_not_check_is_unknown():
    v = judge(LEAKS, lambda reps: Round(reps, detail="the run has no nonzero_pages result for this kernel"))
    assert v.verdict == UNKNOWN


# -- from a bundle -----------------------------------------------------------------------------------------


def row(ok, detail):
    return ExpectationRow(name="nonzero_pages", kernel="k", ok=ok, detail=detail)


def test_failed_repetitions_are_read_from_the_details():
    assert failed_reps([row(True, "3 memtouch runs, each with 0 non-zero pages")], 3) == 0
    assert failed_reps([row(False, "rep2 touch: 53 non-zero pages (0 with memdirty's pattern)")], 3) == 1
    assert failed_reps([row(False, "rep1 a: 5 non-zero pages; rep1 b: 2 non-zero pages; rep3 a: 1")], 3) == 2
    assert failed_reps([row(False, "median 12 > 10")], 3) == 3  # a check across repetitions: all of them


def test_a_run_that_stopped_on_a_crash_of_the_candidate(tmp_path):
    path = synth.write_bundle(tmp_path / "b", {"good": {("boot_to_ssh_s", "boot"): [3.0]},
                                               "cand": {("boot_to_ssh_s", "boot"): [3.0]}},
                              status="failed", error="QEMU exited with code 0 after a guest kernel failure")
    assert crash_line(path, "cand") is None
    (path / "cand" / "rep1" / "serial.log").write_text("[ 0.5] Kernel panic - not syncing: Attempted to kill init!\n")
    r = round_from_bundle(LEAKS, load_bundle(path), path, "good", "cand", 1)
    assert r.crashed == "[ 0.5] Kernel panic - not syncing: Attempted to kill init!" and r.error is None


def test_a_run_that_stopped_on_a_harness_error(tmp_path):
    path = synth.write_bundle(tmp_path / "b", {"good": {}, "cand": {}}, status="failed",
                              error="guest did not boot within 180 s")
    r = round_from_bundle(FAULT, load_bundle(path), path, "good", "cand", 3)
    assert r.crashed is None and r.error == "guest did not boot within 180 s"


def test_a_complete_run_gives_samples_and_expectation_results(tmp_path):
    samples = {"good": {("fault_in_ms", "touch"): [1.0, 2.0]}, "cand": {("fault_in_ms", "touch"): [3.0, 4.0]}}
    path = synth.write_bundle(tmp_path / "b", samples, status="failed", error="expectations failed", expectations=[
        {"name": "nonzero_pages", "kernel": "cand", "ok": False, "detail": "rep2 touch: 53 non-zero pages"},
        {"name": "nonzero_pages", "kernel": "good", "ok": True, "detail": "2 memtouch runs"}])
    b = load_bundle(path)
    r = round_from_bundle(FAULT, b, path, "good", "cand", 2)
    assert (r.good, r.step, r.deterministic) == ([1.0, 2.0], [3.0, 4.0], False)
    r = round_from_bundle(LEAKS, b, path, "good", "cand", 2)
    assert r.failed == 1 and "53 non-zero pages" in r.detail


def test_a_bisect_keeps_the_bad_ends_failure_rate_and_each_good_verdicts_confidence(tmp_path, capsys):
    """Bisect.run with rounds from an injected runner: candidates 4.. fail one repetition in three."""
    import json

    from harness.attribution.bisect_plan import BisectPlan
    from harness.attribution.bisection import LOG_FILE, STATE_FILE, Bisect
    from harness.attribution.rounds import failure_rate_lower_bound
    from harness.attribution.search import BisectState

    class Fake(Bisect):
        def judge(self, k, direction):
            runner = Failures(lambda i: k >= 4 and i % 3 == 1)
            return judge_step(self.criterion, runner, reps=3, max_reps=12, direction=direction,
                              bad_fail_rate=self.plan.bad_fail_rate, say=lambda line: None)

    labels = ["good"] + [f"p{i}" for i in range(1, 7)]
    plan = {"scenario": "s.yaml", "tree": None, "candidates": labels, "labels": labels,
            "criterion": {"expect": "nonzero_pages"}, "direction": None, "reps": 3, "max_reps": 12, "timing": None}
    bisect = Fake(tmp_path, BisectPlan.model_validate(plan), BisectState(labels))
    assert bisect.run() == 0
    assert "first bad: [4] p4" in capsys.readouterr().out
    state = json.loads((tmp_path / STATE_FILE).read_text())
    # 1 failure in 3 supports (95 %) a rate of only 1.7 %: a good verdict takes --max-reps clean runs, and says so
    rate = failure_rate_lower_bound(1, 3)
    assert state["bad_fail_rate"] == pytest.approx(rate)
    goods = [s for s in state["steps"] if s["verdict"] == GOOD]
    assert goods and all(s["confidence"] == pytest.approx(1 - (1 - rate) ** 12) for s in goods)
    assert "would have shown with 19% confidence (capped by --max-reps)" in (tmp_path / LOG_FILE).read_text()


def test_the_bad_ends_failure_rate_is_taken_at_its_lower_bound():
    from harness.attribution.rounds import failure_rate_lower_bound, reps_for_confidence

    assert failure_rate_lower_bound(0, 3) == 0.0
    low = failure_rate_lower_bound(3, 3)
    assert 0.36 < low < 0.37  # 0.05 ** (1/3): 3 of 3 is at least 37 %, not 100 %
    assert reps_for_confidence(low) == 7  # so one clean repetition of a candidate is never "good"
    assert failure_rate_lower_bound(1, 10) < failure_rate_lower_bound(5, 10) < 0.5
