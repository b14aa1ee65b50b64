"""The bisect search on a fake step function: right answer, step bound, skips, "cannot tell", resume."""

from __future__ import annotations

import math

import pytest

from harness.attribution.search import BAD, GOOD, SKIP, UNKNOWN, BisectState


def run_search(n, judge, state=None, stop_after=None):
    state = state or BisectState([f"patch {i}" for i in range(n + 1)])
    judged = 0
    while (k := state.next_candidate()) is not None:
        if stop_after is not None and judged == stop_after:
            return state, judged
        state.record(k, judge(k))
        judged += 1
    return state, judged


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 13, 32])
def test_finds_every_culprit_within_the_step_bound(n):
    for culprit in range(1, n + 1):
        state, judged = run_search(n, lambda k: BAD if k >= culprit else GOOD)
        answer = state.answer()
        assert answer.kind == "found" and answer.first_bad == culprit, (n, culprit)
        assert judged <= math.ceil(math.log2(n)) + 1 if n > 1 else judged == 1
        assert judged <= state.max_steps()


def test_bad_end_that_is_good_ends_at_once():
    state, judged = run_search(6, lambda k: GOOD)
    assert judged == 1 and state.answer().kind == "bad-end-is-good"


def test_skipped_candidates_are_stepped_around():
    # culprit 6; the midpoint 4 cannot be built: its neighbours are tried instead
    state, _ = run_search(8, lambda k: SKIP if k == 4 else (BAD if k >= 6 else GOOD))
    answer = state.answer()
    assert answer.kind == "found" and answer.first_bad == 6
    assert [s.index for s in state.steps][:2] == [8, 4]


def test_a_skipped_candidate_next_to_the_culprit_leaves_a_range():
    state, _ = run_search(8, lambda k: SKIP if k == 3 else (BAD if k >= 4 else GOOD))
    assert state.answer().kind == "range" and state.answer().candidates == [3, 4]


def test_only_unjudgeable_candidates_between_good_and_bad_give_a_range_not_a_guess():
    # culprit 4, but 3 cannot be told apart (unknown): the answer is "3 or 4"
    state, _ = run_search(6, lambda k: UNKNOWN if k == 3 else (BAD if k >= 4 else GOOD))
    answer = state.answer()
    assert answer.kind == "range" and answer.candidates == [3, 4]


def test_unjudgeable_bad_end_is_a_range_over_everything():
    state, judged = run_search(4, lambda k: UNKNOWN)
    assert judged == 1 and state.answer().kind == "range" and state.answer().candidates == [1, 2, 3, 4]


def test_resume_after_interruption_continues_where_it_stopped(tmp_path):
    def judge(k):
        return BAD if k >= 5 else GOOD

    state, judged = run_search(8, judge, stop_after=2)
    assert state.answer() is None
    path = tmp_path / "bisect-state.json"
    state.save(path)
    resumed = BisectState.load(path)
    assert resumed.log_lines() == state.log_lines()
    final, more = run_search(8, judge, state=resumed)
    assert final.answer().first_bad == 5
    assert judged + more <= final.max_steps()


def test_log_reads_like_git_bisect_log():
    state = BisectState(["good end", "mm: a", "mm: b"])
    state.record(2, BAD, "fault_in_ms +12.0 % (p 0.03)")
    state.record(1, GOOD, "fault_in_ms +0.1 %")
    assert state.log_lines() == ["# bad: [2] mm: b -- fault_in_ms +12.0 % (p 0.03)", "# good: [1] mm: a -- fault_in_ms +0.1 %"]
    assert state.answer().first_bad == 2 and state.steps_left() == 0


def test_steps_left_counts_down():
    state = BisectState([str(i) for i in range(9)])
    assert state.steps_left() == 4
    state.record(8, BAD)
    assert state.steps_left() == 3


def test_a_bisect_directory_resumes_from_its_one_state_file(tmp_path):
    from harness.attribution.bisect_plan import BisectPlan
    from harness.attribution.bisection import LOG_FILE, STATE_FILE, Bisect

    plan = {"scenario": "s.yaml", "tree": None, "candidates": ["a", "b", "c"], "labels": ["good", "p1", "p2"],
            "criterion": {"metric": "fault_in_ms", "phase": "touch"}, "direction": 1, "reps": 3, "max_reps": 12,
            "timing": None}
    bisect = Bisect(tmp_path, BisectPlan.model_validate(plan), BisectState(plan["labels"]))
    bisect.state.record(2, BAD, "moved")
    bisect.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_FILE, LOG_FILE])
    resumed = Bisect.load(tmp_path)
    assert resumed.plan == BisectPlan.model_validate(plan) and resumed.state.log_lines() == bisect.state.log_lines()
    assert resumed.state.next_candidate() == 1


def test_candidates_after_are_the_next_candidate_of_either_verdict():
    """What bisect builds ahead while a candidate runs: exactly what the search asks for next, good or bad."""
    state = BisectState([f"c{i}" for i in range(7)])  # the good end and 6 patches
    assert state.candidates_after(6) == [3]  # the bad end: if it is good there is nothing to search
    state.record(6, BAD)
    assert state.candidates_after(3) == [4, 1]
    for verdict, expected in ((GOOD, 4), (BAD, 1)):
        branch = BisectState(state.labels, list(state.steps))
        branch.record(3, verdict)
        assert branch.next_candidate() == expected
    state.record(3, GOOD)
    assert state.candidates_after(4) == [5]  # if 4 is bad it is the answer: nothing to build for that branch
