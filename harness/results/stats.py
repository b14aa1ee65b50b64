"""Judge the change of one metric between two sets of samples (A = baseline, B = candidate).

The rules, which `harness compare` and `harness report` both apply:

* The change is the % change of the **median** of B against the median of A.  A baseline median of 0
  with a non-zero B is an infinite change (e.g. ``nonzero_pages`` 0 -> 3).
* The 95% confidence interval of that change comes from a percentile bootstrap
  (:func:`scipy.stats.bootstrap`, 2000 resamples, fixed seed); it needs at least 2 samples on each side.
* Time and memory metrics are tested with a two-sided Mann-Whitney U test
  (:func:`scipy.stats.mannwhitneyu`).  They are flagged only when p < 0.05 **and** |change| > threshold.
  (With the exact test, 4 samples a side is the least that can reach p < 0.05.)  A change above the
  threshold with too few samples for the test ever to reach p < 0.05 gets the verdict TOO_FEW, never a
  silent "unchanged".
* Counters are counts, not noisy measurements, so there is no test (``p`` is None).  A counter is
  flagged when |change| > threshold **and** the samples do not overlap: every sample of B is above
  every sample of A, or every one is below.  With one sample each that is simply "the counts differ
  by more than the threshold".
* Timings measured under icount (guest time = instruction count, see README) vary only as much as the
  work itself does, so they are judged like counters (no test, at least 2 samples a side): flagged when
  the samples do not overlap and |change| > threshold.  When both sides are quiet (spread
  (max - min) / median below ICOUNT_THRESHOLD_PCT, the usual case) the threshold is that small one,
  so 3 repetitions can show a 2 % effect; when the work itself varies between runs (how many pages a
  reporting pass happened to skip, say), the usual threshold applies.
* The direction comes from :func:`harness.metrics.definition`: ``better="lower"`` and B higher is a
  regression, B lower an improvement (and the reverse for ``"higher"``).  ``better=None`` is
  informational and never flagged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from harness.results.metrics import COUNTER, TIME, definition

ALPHA = 0.05
DEFAULT_THRESHOLD_PCT = 5.0
ICOUNT_THRESHOLD_PCT = 1.0  # quiet icount timings: the change to flag, and the largest spread a side may have
BOOTSTRAP_RESAMPLES = 2000
SEED = 20261122

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"  # judged, not flagged
INFO = "info"  # better=None: never flagged
NOT_JUDGED = "not-judged"  # timings from incomparable environments
TOO_FEW = "too-few-samples"  # a change above the threshold that n samples a side can never make significant


@dataclass
class Summary:
    n: int
    median: float
    mean: float
    stddev: float  # sample standard deviation (ddof=1); 0 for a single sample
    cv: float | None  # stddev / |mean|; None when the mean is 0
    total: float
    min: float
    max: float


def summarize(values) -> Summary:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no samples")
    mean = float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return Summary(
        n=int(x.size),
        median=float(np.median(x)),
        mean=mean,
        stddev=sd,
        cv=(sd / abs(mean)) if mean != 0 else None,
        total=float(np.sum(x)),
        min=float(np.min(x)),
        max=float(np.max(x)),
    )


def pct_change(base: float, new: float) -> float:
    """% change of new against base; +-inf when base is 0 and new is not."""
    if base == new:
        return 0.0
    if base == 0:
        return math.copysign(math.inf, new)
    return (new - base) / abs(base) * 100.0


@dataclass
class Judgement:
    name: str
    kind: str
    better: str | None
    a: Summary
    b: Summary
    change_pct: float  # of medians; may be +-inf
    ci_low: float | None  # 95% bootstrap CI of change_pct
    ci_high: float | None
    p: float | None  # Mann-Whitney U two-sided; None for counters or when not judged
    test: str  # which rule judged it
    verdict: str  # REGRESSION, IMPROVEMENT, UNCHANGED, INFO or NOT_JUDGED
    reason: str  # why not judged, else ""

    @property
    def flagged(self) -> bool:
        return self.verdict in (REGRESSION, IMPROVEMENT)

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("change_pct", "ci_low", "ci_high", "p"):
            v = d[key]
            if v is not None and not math.isfinite(v):
                d[key] = None  # JSON has no infinity; see change_display
        d["change_display"] = format_change(self.change_pct)
        d["flagged"] = self.flagged
        return d


def format_change(change: float) -> str:
    if math.isinf(change):
        return "+inf% (from 0)" if change > 0 else "-inf% (from 0)"
    return f"{change:+.1f}%"


def _median_change(a, b, axis=-1):
    ma = np.median(a, axis=axis)
    mb = np.median(b, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mb == ma, 0.0, (mb - ma) / np.abs(ma) * 100.0)


def bootstrap_ci(a, b, seed: int = SEED) -> tuple[float | None, float | None]:
    """95% percentile-bootstrap CI of the % change of medians; (None, None) if it cannot be had."""
    from scipy import (
        stats as sps,  # slow to import: only when comparing, not on every CLI start
    )

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2 or np.median(a) == 0:
        return None, None
    kwargs = dict(n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", vectorized=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = sps.bootstrap((a, b), _median_change, rng=np.random.default_rng(seed), **kwargs)
        except TypeError:  # scipy < 1.15 calls it random_state
            res = sps.bootstrap((a, b), _median_change, random_state=np.random.default_rng(seed), **kwargs)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None, None
    return lo, hi


def mann_whitney_p(a, b) -> float:
    from scipy import stats as sps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else 1.0


def smallest_mann_whitney_p(na: int, nb: int) -> float:
    """The smallest two-sided p the exact Mann-Whitney U test can give for these sample sizes."""
    return min(1.0, 2 / math.comb(na + nb, na))


def spread_pct(s: Summary) -> float:
    """(max - min) / |median| in percent: how far apart the repetitions of one side are."""
    if s.median == 0:
        return 0.0 if s.max == s.min else math.inf
    return (s.max - s.min) / abs(s.median) * 100


def _direction(better: str | None, change: float) -> str:
    if change == 0 or better is None:
        return UNCHANGED
    worse = change > 0 if better == "lower" else change < 0
    return REGRESSION if worse else IMPROVEMENT


def judge(
    name: str,
    a,
    b,
    *,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    comparable: bool = True,
    reason: str = "",
    deterministic: bool = False,
) -> Judgement:
    """Compare samples b against baseline samples a of metric `name`.

    `comparable=False` (timings from different accelerators, timing modes, QEMU versions or host CPUs)
    still summarises both sides but gives the verdict NOT_JUDGED with `reason`.  `deterministic=True`:
    both sides ran under icount, so timings are judged by the counter rule (see the module doc).
    """
    d = definition(name)
    sa, sb = summarize(a), summarize(b)
    change = pct_change(sa.median, sb.median)
    lo, hi = bootstrap_ci(a, b)
    common: dict[str, Any] = dict(name=name, kind=d.kind, better=d.better, a=sa, b=sb, change_pct=change, ci_low=lo, ci_high=hi)
    if not comparable:
        return Judgement(**common, p=None, test="none", verdict=NOT_JUDGED, reason=reason)
    over = abs(change) > threshold_pct
    apart = sb.min > sa.max or sb.max < sa.min
    if d.kind == COUNTER:
        p, test, hit = None, "counter: no overlap and |change| > threshold", over and apart
    elif deterministic and d.kind == TIME and min(sa.n, sb.n) >= 2:
        quiet = max(spread_pct(sa), spread_pct(sb)) < ICOUNT_THRESHOLD_PCT
        limit = ICOUNT_THRESHOLD_PCT if quiet else threshold_pct
        over = abs(change) > limit
        p, test, hit = None, f"icount: no overlap and |change| > {limit:g}%", over and apart
    else:
        p = mann_whitney_p(a, b)
        test, hit = "mann-whitney-u", over and p < ALPHA
    if d.better is None:
        verdict = INFO
    elif hit:
        verdict = _direction(d.better, change)
    elif over and p is not None and smallest_mann_whitney_p(sa.n, sb.n) >= ALPHA:
        verdict = TOO_FEW
    else:
        verdict = UNCHANGED
    return Judgement(**common, p=p, test=test, verdict=verdict, reason="")
