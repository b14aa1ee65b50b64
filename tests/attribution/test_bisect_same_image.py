"""A bisect candidate whose kernel is byte for byte one already judged takes that verdict without a run."""

from __future__ import annotations

import pytest

from harness.attribution import bisection as bis
from harness.attribution.bisect_plan import BisectPlan
from harness.attribution.search import BAD, GOOD, BisectState


class Ran(Exception):
    pass


@pytest.fixture
def bisect(tmp_path, monkeypatch):
    """A 5-candidate bisect whose kernels' digests are given per spec; running a scenario raises Ran."""
    specs = [f"base+s@{k}" for k in range(6)]
    digests = {specs[0]: "A", specs[1]: "A", specs[2]: "B", specs[3]: "C", specs[4]: "C", specs[5]: "D"}
    monkeypatch.setattr(bis, "resolve_kernel", lambda spec: spec.text)
    monkeypatch.setattr(bis, "image_digest", lambda kernel: digests[kernel])

    def run(*a, **k):
        raise Ran

    monkeypatch.setattr(bis, "run_scenario", run)
    plan = {"scenario": "x.yaml", "tree": None, "candidates": specs, "labels": specs,
            "criterion": {"metric": "fault_in_ms", "phase": "touch"}, "direction": 1, "reps": 1, "max_reps": 3,
            "timing": "icount"}
    return bis.Bisect(tmp_path, BisectPlan.model_validate(plan), BisectState(specs))


def test_the_good_ends_image_is_good_without_a_run(bisect):
    v = bisect.judge(1, 1)
    assert v.verdict == GOOD and "the same kernel image as [0]" in v.evidence and "not run again" in v.evidence


def test_an_image_judged_bad_before_is_bad_without_a_run(bisect):
    with pytest.raises(Ran):  # a new image is run
        bisect.judge(4, 1)
    bisect.state.record(4, BAD, "moved")
    v = bisect.judge(3, 1)
    assert v.verdict == BAD and "[4]" in v.evidence
    with pytest.raises(Ran):
        bisect.judge(2, 1)
    assert bisect.plan.images == {"0": "A", "4": "C", "3": "C", "2": "B"}  # kept in bisect.json for --resume

