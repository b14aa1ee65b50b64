"""Is one bisect candidate good or bad?  From its samples against the good end's, by `compare`'s rules.

A metric criterion asks whether the metric moved the way it moved at the bad end (the bad end itself:
whether it is flagged at all, which sets that direction).  An expectation criterion asks whether a
scenario expectation (nonzero_pages, say) fails on the candidate (see `rounds`).  None means "not yet": the
change is above the threshold but not yet significant, so more repetitions may tell.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.attribution.search import BAD, GOOD, UNKNOWN
from harness.errors import InputError
from harness.results import stats
from harness.results.metrics import definition


@dataclass(frozen=True)
class Criterion:
    metric: str | None = None  # NAME
    phase: str | None = None
    expect: str | None = None  # an expectation name
    threshold_pct: float = stats.DEFAULT_THRESHOLD_PCT

    @classmethod
    def parse(cls, metric: str | None, expect: str | None, threshold_pct: float) -> Criterion:
        if bool(metric) == bool(expect):
            raise InputError("give exactly one of --metric NAME@PHASE and --expect NAME")
        if expect:
            return cls(expect=expect, threshold_pct=threshold_pct)
        assert metric is not None  # exactly one of the two is given
        name, _, phase = metric.partition("@")
        if not name or not phase:
            raise InputError(f"--metric {metric!r}: expected NAME@PHASE, e.g. fault_in_ms@touch")
        if definition(name).better is None:
            raise InputError(f"--metric {name}: an informational metric has no better direction to bisect on")
        return cls(metric=name, phase=phase, threshold_pct=threshold_pct)

    def describe(self) -> str:
        return f"expectation {self.expect}" if self.expect else f"{self.metric}@{self.phase}"


@dataclass(frozen=True)
class Verdict:
    verdict: str | None  # GOOD, BAD, UNKNOWN, or None: more repetitions needed
    evidence: str
    direction: int = 0  # sign of the change (metric criterion, when flagged)
    failed: tuple[int, int] | None = None  # expectation criterion: (failed, run) repetitions of the candidate
    confidence: float | None = None  # a good verdict on an expectation: how surely the bad end's failure would have shown


def judge_metric(c: Criterion, good: list[float], step: list[float], *, deterministic: bool,
                 direction: int | None) -> Verdict:
    """direction None: this is the bad end, which must move at all; else the sign it moved with."""
    assert c.metric is not None, "a metric criterion"
    j = stats.judge(c.metric, good, step, threshold_pct=c.threshold_pct, deterministic=deterministic)
    sign = (j.change_pct > 0) - (j.change_pct < 0)
    evidence = (f"{c.metric}@{c.phase} {fmt(j.a.median)} -> {fmt(j.b.median)} ({stats.format_change(j.change_pct)}"
                f"{'' if j.p is None else f', p {j.p:.2g}'}, n {j.a.n}/{j.b.n}, {j.verdict})")
    if j.verdict == stats.NOT_JUDGED:
        return Verdict(UNKNOWN, f"{evidence}: {j.reason}")
    if j.verdict == stats.TOO_FEW:
        return Verdict(None, evidence)
    towards = direction is None or sign == direction
    if j.verdict == stats.UNCHANGED and j.p is not None and abs(j.change_pct) > c.threshold_pct and towards:
        return Verdict(None, f"{evidence}: above the threshold, not significant yet")
    if j.flagged:
        if towards:
            return Verdict(BAD, evidence, sign)
        return Verdict(GOOD, f"{evidence}: moved the other way")
    return Verdict(GOOD, evidence)


def fmt(v: float) -> str:
    return f"{v:.6g}"
