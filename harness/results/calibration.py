"""A/A calibration: the noise of each metric, measured by running one kernel against itself, sets the threshold
a change of that metric must pass before compare and report flag it, per runner kind, instead of one fixed 5 %.

An A/A bundle is one whose kernels share a spec (each later side is compared with the first), or, with one
kernel, one that merge.json names as an A/A cell or that ``harness bench noise`` wrote (scenario ``aa-*``):
its repetitions are split alternately into two sides.  For each (metric, phase) the noise is

* the CV of all its samples (:func:`stats.summarize`), and
* the change of medians between the two sides (what compare would have called the change),

and the threshold is ``max(FLOOR_PCT, CV_FACTOR x CV, the largest A/A change)`` over every A/A observation of
that runner kind.  A runner kind is what timings depend on (accelerator, timing mode, QEMU, host CPU:
:func:`harness.results.compare.environment`).  Counters keep their no-overlap rule and quiet icount timings
their 1 % rule (:func:`stats.judge`); only the threshold changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.numbers import fmt_num
from harness.results import stats
from harness.results.bundle import Bundle
from harness.results.compare import environment
from harness.results.history import Night
from harness.results.metrics import COUNTER, definition

FLOOR_PCT = 1.0  # no threshold below this, however quiet the A/A run was
CV_FACTOR = 2.0

RunnerKind = tuple[tuple[str, str | None], ...]
ThresholdFor = Callable[[str, str], "Threshold"]


def runner_kind(b: Bundle) -> RunnerKind:
    return tuple(environment(b).items())


def describe_kind(kind: RunnerKind) -> str:
    return ", ".join(f"{k} {v or '?'}" for k, v in kind)


@dataclass(frozen=True)
class Observation:
    scenario: str  # an aa-X scenario calibrates scenario X
    name: str
    phase: str
    cv_pct: float  # of every sample of both sides
    change_pct: float  # |change of medians| between the sides
    n: int  # samples on both sides together
    bundle: str  # directory name
    night: str

    @property
    def threshold_pct(self) -> float:
        return max(FLOOR_PCT, CV_FACTOR * self.cv_pct, self.change_pct)


@dataclass(frozen=True)
class Threshold:
    pct: float
    source: str  # where it came from, printed beside it


def fixed(pct: float) -> Threshold:
    return Threshold(pct, f"fixed {pct:g} %")


def _raw_samples(b: Bundle, names: set[str]) -> dict[tuple[str, str], list[float]]:
    """Samples of the metric rows whose kernel field is one of `names` (a slug tells twins apart)."""
    out: dict[tuple[str, str], list[float]] = {}
    for row in b.metrics:
        if row.kernel in names:
            out.setdefault((row.name, row.phase or ""), []).append(float(row.value))
    return out


def aa_sides(b: Bundle, named_aa: bool) -> list[tuple[dict, dict]]:
    """The (A, B) sample sets an A/A bundle holds; [] when it is not one."""
    records = b.kernel_records()
    specs = [str(k.spec or k.slug) for k in records]
    twins = [i for i in range(1, len(specs)) if specs[i] == specs[0] and records[i].slug != records[0].slug]
    if twins:
        first = _raw_samples(b, {specs[0], str(records[0].slug)})
        return [(first, _raw_samples(b, {str(records[i].slug)})) for i in twins]
    labels = b.kernels
    if len(labels) == 1 and named_aa:
        samples = b.samples(labels[0])
        return [({key: vals[0::2] for key, vals in samples.items()},
                 {key: vals[1::2] for key, vals in samples.items()})]
    return []


def observe(b: Bundle, night: str, named_aa: bool) -> list[Observation]:
    out = []
    for a, bb in aa_sides(b, named_aa):
        for key, av in a.items():
            bv = bb.get(key, [])
            if not av or not bv:
                continue
            s = stats.summarize(av + bv)
            change = abs(stats.pct_change(stats.summarize(av).median, stats.summarize(bv).median))
            if s.cv is None or not math.isfinite(change):
                continue  # all zero, or from zero: no relative noise to speak of
            out.append(Observation(b.scenario.removeprefix("aa-"), key[0], key[1], s.cv * 100, change, s.n,
                                   b.path.name, night))
    return out


@dataclass
class Calibration:
    observations: dict[RunnerKind, list[Observation]] = field(default_factory=dict)

    @classmethod
    def from_nights(cls, nights: list[Night]) -> Calibration:
        cal = cls()
        for night in nights:
            for b in night.bundles:
                obs = observe(b, night.name, night.named_aa(b))
                if obs:
                    cal.observations.setdefault(runner_kind(b), []).extend(obs)
        return cal

    def __bool__(self) -> bool:
        return bool(self.observations)

    def thresholds(self, kind: RunnerKind) -> dict[tuple[str, str, str], Threshold]:
        """(scenario, name, phase) -> the threshold the A/A runs of this runner kind give it (the largest)."""
        worst: dict[tuple[str, str, str], Observation] = {}
        count: dict[tuple[str, str, str], int] = {}
        for o in self.observations.get(kind, []):
            key = (o.scenario, o.name, o.phase)
            count[key] = count.get(key, 0) + 1
            if key not in worst or o.threshold_pct > worst[key].threshold_pct:
                worst[key] = o
        return {key: Threshold(o.threshold_pct, _source(o, count[key])) for key, o in worst.items()}

    def threshold_for(self, b: Bundle, default_pct: float) -> ThresholdFor:
        """What compare asks per metric of bundle b: the A/A threshold of b's runner kind for (name, phase) in b's
        scenario; for a timing or memory metric, else the largest for (name, phase) in any scenario, else for the
        name in any phase (a counter's count depends on the workload: never borrowed); else the fixed default."""
        table = self.thresholds(runner_kind(b))
        exact = {(n, p): t for (sc, n, p), t in table.items() if sc == b.scenario}
        by_phase: dict[tuple[str, str], Threshold] = {}
        by_name: dict[str, Threshold] = {}
        for (_sc, name, phase), t in table.items():
            if definition(name).kind == COUNTER:
                continue
            if (name, phase) not in by_phase or t.pct > by_phase[(name, phase)].pct:
                by_phase[(name, phase)] = t
            if name not in by_name or t.pct > by_name[name].pct:
                by_name[name] = t

        def lookup(name: str, phase: str) -> Threshold:
            if (name, phase) in exact:
                return exact[(name, phase)]
            if (name, phase) in by_phase:
                t = by_phase[(name, phase)]
                return Threshold(t.pct, t.source + " (another scenario)")
            if name in by_name:
                t = by_name[name]
                return Threshold(t.pct, t.source + " (another phase)")
            return fixed(default_pct)

        return lookup


def _source(o: Observation, count: int) -> str:
    more = f", largest of {count} A/A runs" if count > 1 else ""
    return (f"A/A {o.night}/{o.bundle}: CV {fmt_num(o.cv_pct)} %, change {fmt_num(o.change_pct)} %, "
            f"n={o.n}{more}")
