"""Judging one bisect step over rounds of repetitions: more repetitions while the answer is not yet sure.

A round runs the scenario on the candidate (and the good end) for some repetitions and gives a `Round`.
`judge_step` asks for rounds until it can answer:

* metric criterion: until the comparison against the good end is significant, or shows no change above
  the threshold, or --max-reps repetitions a side are spent (then "unknown");
* expectation criterion: a failed repetition is "bad" at once; a clean candidate is "good" only after
  enough clean repetitions that a bug failing as often as the bad end did would have shown with 95 %
  confidence (n >= log(0.05) / log(1 - p), capped by --max-reps), and the verdict says how confident it is;
* the candidate's kernel crashed (a panic, an Oops): "bad" by default, or "skip" (--panic skip);
* the run stopped on a harness error (no boot, no SSH, QEMU did not start): "skip".

The runner is a function of the number of repetitions, so this logic is tested without a guest.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import scipy.stats

from harness.attribution.judge import Criterion, Verdict, judge_metric
from harness.attribution.search import BAD, GOOD, SKIP, UNKNOWN
from harness.machine.vm import PANIC_MARKERS
from harness.results.bundle import Bundle
from harness.results.model import ExpectationRow

CONFIDENCE = 0.95
PANIC_CHOICES = (BAD, SKIP)


@dataclass(frozen=True)
class Round:
    """What one run of a step gave: `reps` repetitions a side."""

    reps: int
    good: list[float] = field(default_factory=list)  # metric criterion: the good end's samples
    step: list[float] = field(default_factory=list)  # and the candidate's
    deterministic: bool = False  # both sides ran under icount
    failed: int | None = None  # expectation criterion: the candidate's repetitions that failed it (None: no result)
    detail: str = ""  # the expectation's detail, or why there is no result
    crashed: str | None = None  # the candidate's kernel crashed: the line that says so
    error: str | None = None  # the run stopped on a harness error before it could tell


RunRound = Callable[[int], Round]


def reps_for_confidence(fail_rate: float, confidence: float = CONFIDENCE) -> int:
    """Clean repetitions after which a bug failing with probability `fail_rate` per run would have shown
    at least once with probability `confidence`: the least n with 1 - (1 - p)^n >= confidence."""
    if fail_rate >= 1:
        return 1
    if fail_rate <= 0:
        raise ValueError("a failure rate of 0 never shows")
    return max(1, math.ceil(math.log(1 - confidence) / math.log(1 - fail_rate) - 1e-9))


def failure_rate_lower_bound(failed: int, reps: int, confidence: float = CONFIDENCE) -> float:
    """A failure rate the bad end's `failed` of `reps` support with `confidence` (one-sided Clopper-Pearson
    lower bound): 3 of 3 is at least 37 %, not 100 %, so one clean run of a candidate never suffices."""
    if failed <= 0:
        return 0.0
    return float(scipy.stats.beta.ppf(1 - confidence, failed, reps - failed + 1))


def confidence_after(fail_rate: float, clean: int) -> float:
    """How likely a bug failing with probability `fail_rate` per run would have failed one of `clean` runs."""
    return 1 - (1 - min(fail_rate, 1.0)) ** clean


def smallest_rate_seen(clean: int, confidence: float = CONFIDENCE) -> float:
    """The lowest failure rate that `clean` clean repetitions rule out with `confidence`."""
    return 1 - (1 - confidence) ** (1 / clean)


def judge_step(c: Criterion, run_round: RunRound, *, reps: int, max_reps: int, direction: int | None,
               bad_fail_rate: float | None = None, panic: str = BAD,
               say: Callable[[str], None] | None = None) -> Verdict:
    """Judge one candidate from rounds of `run_round(reps)`.

    direction: the sign of the change that makes a candidate bad; None for the bad end itself.
    bad_fail_rate: how often the bad end failed the expectation (0 < p <= 1); sizes a good verdict.
    """
    say = say or (lambda line: print(line, file=sys.stderr))
    good_vals: list[float] = []
    step_vals: list[float] = []
    total = 0
    while True:
        r = run_round(reps)
        if r.crashed:
            how = "" if panic == BAD else " (--panic skip)"
            return Verdict(panic, f"the kernel crashed{how}: {r.crashed}")
        if r.error is not None:
            return Verdict(SKIP, f"could not judge (harness error): {r.error}")
        total += reps
        if c.expect:
            v = _expectation(c, r, total, direction, bad_fail_rate, max_reps)
        else:
            good_vals += r.good
            step_vals += r.step
            if not good_vals or not step_vals:
                return Verdict(UNKNOWN, f"{c.describe()} was not recorded")
            v = judge_metric(c, good_vals, step_vals, deterministic=r.deterministic, direction=direction)
            if v.verdict is None and total >= max_reps:
                return Verdict(UNKNOWN, f"{v.evidence}: not significant after {total} repetitions a side")
        if v.verdict is not None:
            return v
        reps = _more(c, total, max_reps, bad_fail_rate)
        say(f"bisect: not sure yet ({v.evidence}); {reps} more repetitions")


def _more(c: Criterion, total: int, max_reps: int, bad_fail_rate: float | None) -> int:
    if c.expect:
        return _clean_needed(bad_fail_rate, max_reps) - total
    return min(total, max_reps - total)  # double the samples, up to max_reps


def _clean_needed(bad_fail_rate: float | None, max_reps: int) -> int:
    if not bad_fail_rate:
        return 0  # no failure rate to size it by: the first round decides
    return min(reps_for_confidence(bad_fail_rate), max_reps)


def _expectation(c: Criterion, r: Round, clean: int, direction: int | None, rate: float | None,
                 max_reps: int) -> Verdict:
    """`clean`: the repetitions so far, all clean unless this round failed."""
    if r.failed is None:
        return Verdict(UNKNOWN, r.detail)
    if r.failed:
        return Verdict(BAD, f"{r.failed}/{r.reps} repetitions failed {c.expect}: {r.detail}"[:300],
                       failed=(r.failed, r.reps))
    if direction is None or not rate:
        # the bad end itself, or no failure rate known (bisect-check without --bad-fail-rate)
        return Verdict(GOOD, f"{_clean(clean)}: a failure in {smallest_rate_seen(clean):.0%} of runs or more would "
                             f"have shown (95% confidence); {r.detail}"[:300], failed=(0, clean))
    if clean < _clean_needed(rate, max_reps):
        return Verdict(None, f"{_clean(clean)}, {_clean_needed(rate, max_reps)} needed")
    conf = confidence_after(rate, clean)
    capped = " (capped by --max-reps)" if conf < CONFIDENCE else ""
    return Verdict(GOOD, f"{_clean(clean)}: a failure rate of {rate:.0%} (the bad end's, its 95% lower bound "
                         f"where measured) would have shown with {conf:.0%} confidence{capped}", failed=(0, clean), confidence=conf)


def _clean(n: int) -> str:
    return f"{n} clean repetition{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------------------- from a bundle

REP = re.compile(r"\brep(\d+)\b")


def failed_reps(rows: list[ExpectationRow], reps: int) -> int:
    """How many repetitions failed these rows: the ones their details name (rowNs), or all of them when a
    failed row names none (a check of a median across repetitions)."""
    named: set[str] = set()
    for row in rows:
        if row.ok:
            continue
        found = REP.findall(row.detail)
        if not found:
            return reps
        named.update(found)
    return min(len(named), reps)


def crash_line(bundle_dir: Path, slug: str) -> str | None:
    """The first kernel crash line (panic, Oops, BUG) in the serial logs of one kernel's repetitions."""
    for log in sorted((bundle_dir / slug).glob("rep*/serial.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(marker in line for marker in PANIC_MARKERS):
                return line.strip()[:200]
    return None


def round_from_bundle(c: Criterion, b: Bundle, bundle_dir: Path, good: str, candidate: str, reps: int) -> Round:
    """The Round one run of [good, candidate] left in its bundle."""
    # A failed run without expectation rows stopped on an error: evaluating the expectations is its last act.
    stopped = b.status == "failed" and not b.expectations
    if stopped:
        crashed = crash_line(bundle_dir, b.kernel_slug(candidate))
        return Round(reps, crashed=crashed, error=None if crashed else (b.error or "the run failed"))
    if c.expect:
        mine = [r for r in b.expectations if r.name == c.expect and r.kernel == candidate]
        if not mine:
            return Round(reps, detail=f"the run has no {c.expect} result for this kernel")
        failed = failed_reps(mine, reps)
        detail = "; ".join(r.detail for r in mine if not r.ok) if failed else mine[0].detail
        return Round(reps, failed=failed, detail=detail)
    key = (c.metric or "", c.phase or "")
    return Round(reps, good=b.samples(good).get(key, []), step=b.samples(candidate).get(key, []),
                 deterministic=b.timing == "icount")
