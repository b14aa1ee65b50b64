"""The bisect search itself, apart from building and running kernels: which candidate to try next, and
what the verdicts so far say.  Pure logic, resumable from its JSON state.

Candidates are numbered 0..n: 0 is the good end (no patches, or the good commit), n the bad end, and k
the kernel with the first k patches (or the k-th commit after the good one).  The first bad candidate
k (k-1 good, k bad) names the culprit: patch k of the series.  A verdict is ``good``, ``bad``, ``skip``
(it could not be built) or ``unknown`` (it was judged, but even with the most repetitions allowed the
measurement could not tell).  Like ``git bisect skip``, skipped and unknown candidates are stepped
around; when only they separate the last good from the first bad, the answer is a range, never a guess.

The bad end is checked first (is it really bad against the good end?), then the search halves the
range: at most ceil(log2 n) + 1 judged steps when nothing is skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

GOOD, BAD, SKIP, UNKNOWN = "good", "bad", "skip", "unknown"
VERDICTS = (GOOD, BAD, SKIP, UNKNOWN)


@dataclass
class Step:
    index: int
    verdict: str
    evidence: str = ""  # one line: what the comparison showed, or why it was skipped
    confidence: float | None = None  # a good verdict on an expectation: how surely the bad end's failure would show


@dataclass
class Answer:
    kind: str  # "found", "range" (only skipped/unknown candidates in between), "bad-end-is-good"
    first_bad: int | None = None  # for "found"
    candidates: list[int] = field(default_factory=list)  # for "range": any of these may be the first bad


@dataclass
class BisectState:
    labels: list[str]  # labels[k] describes candidate k (labels[0] the good end)
    steps: list[Step] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.labels) - 1

    def verdict(self, index: int) -> str | None:
        if index == 0:
            return GOOD  # the good end is good by definition: every step is judged against it
        for s in reversed(self.steps):
            if s.index == index:
                return s.verdict
        return None

    def record(self, index: int, verdict: str, evidence: str = "", confidence: float | None = None) -> None:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
        if not 0 < index <= self.n:
            raise ValueError(f"candidate {index} is outside 1..{self.n}")
        self.steps.append(Step(index, verdict, evidence, confidence))

    # -- the search ----------------------------------------------------------------------------
    def bounds(self) -> tuple[int, int | None]:
        """(highest good, lowest bad above it), from the verdicts so far; bad is None until one is known."""
        good = max(i for i in range(self.n + 1) if self.verdict(i) == GOOD)
        bads = [i for i in range(good + 1, self.n + 1) if self.verdict(i) == BAD]
        return good, (min(bads) if bads else None)

    def next_candidate(self) -> int | None:
        """The candidate to judge next, or None when the answer is known."""
        if self.verdict(self.n) is None:
            return self.n
        good, bad = self.bounds()
        if bad is None:
            return None  # the bad end was not bad (or could not be judged): nothing to search
        untried = [i for i in range(good + 1, bad) if self.verdict(i) is None]
        if not untried:
            return None
        middle = (good + bad) / 2
        return min(untried, key=lambda i: (abs(i - middle), i))

    def candidates_after(self, index: int) -> list[int]:
        """The candidates the search judges next if `index` turns out good, or bad (what to build ahead)."""
        after = []
        for verdict in (GOOD, BAD):
            branch = BisectState(self.labels, [*self.steps, Step(index, verdict)])
            k = branch.next_candidate()
            if k is not None and k not in after:
                after.append(k)
        return after

    def answer(self) -> Answer | None:
        """The result once next_candidate() is None."""
        if self.next_candidate() is not None:
            return None
        good, bad = self.bounds()
        if bad is None:
            return Answer("bad-end-is-good" if self.verdict(self.n) == GOOD else "range",
                          candidates=list(range(good + 1, self.n + 1)))
        if bad == good + 1:
            return Answer("found", first_bad=bad)
        return Answer("range", candidates=list(range(good + 1, bad + 1)))

    def max_steps(self) -> int:
        """Steps a search of n candidates takes at most when nothing is skipped."""
        return math.ceil(math.log2(self.n)) + 1 if self.n > 1 else 1

    def steps_left(self) -> int:
        """At most this many more judged steps (when nothing more is skipped)."""
        if self.next_candidate() is None:
            return 0
        if self.verdict(self.n) is None:
            return self.max_steps()
        good, bad = self.bounds()
        top = self.n if bad is None else bad  # the bad end (n) was judged above, so bad is known here
        width = sum(1 for i in range(good + 1, top) if self.verdict(i) is None) + 1
        return math.ceil(math.log2(width)) if width > 1 else 0

    def log_lines(self) -> list[str]:
        """Like `git bisect log`: one line per judged step, in order."""
        return [f"# {s.verdict}: [{s.index}] {self.labels[s.index]}" + (f" -- {s.evidence}" if s.evidence else "")
                for s in self.steps]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path, extra: dict | None = None) -> None:
        """Write the state (and `extra` keys beside it, e.g. the bisect's plan) as one JSON file."""
        data = {**(extra or {}), "labels": self.labels, "steps": [asdict(s) for s in self.steps]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)  # atomic: an interrupted bisect never leaves half a state file

    @classmethod
    def load(cls, path: Path) -> BisectState:
        data = json.loads(path.read_text())
        return cls(list(data["labels"]), [Step(**s) for s in data["steps"]])
