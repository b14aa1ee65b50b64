"""Selftest verdicts in a bundle (``<kernel>/rep<N>/kselftest.json``, one row per test case), the regression
gate ``compare`` applies to them, and the per-test table for READMEs.

The gate: a case that passed in every repetition on the baseline kernel and failed in every repetition on
the candidate is a *regression* (compare exits 1), and so is a case failing in every repetition that only the
candidate has (a test that bailed out part-way) when the baseline ran that test without a failure; a case whose result differs between repetitions of one
kernel is *flaky* and named as such (it is not a regression: more repetitions tell which it is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness.constants import SELFTEST_FILE
from harness.errors import InputError
from harness.results.bundle import Bundle
from harness.results.model import Record

PASS, FAIL, SKIP = "pass", "fail", "skip"


class SelftestCase(Record):
    suite: str = "mm"
    phase: str | None = None
    test: str
    case: str
    result: str  # pass, fail or skip
    reason: str = ""
    log: str = ""


def kernel_cases(b: Bundle, kernel: str) -> list[tuple[int, SelftestCase]]:
    """(rep, case) of one kernel, in rep order."""
    slug = b.kernel_slug(kernel)
    out: list[tuple[int, SelftestCase]] = []
    reps = sorted((b.path / slug).glob(f"rep*/{SELFTEST_FILE}"), key=lambda p: int(p.parent.name[3:] or 0))
    for path in reps:
        rep = int(path.parent.name[3:])
        try:
            rows = json.loads(path.read_text())
            out += [(rep, SelftestCase.model_validate(r)) for r in rows]
        except (ValueError, ValidationError) as exc:
            raise InputError(f"{path}: not a list of selftest cases: {str(exc).splitlines()[0]}") from None
    return out


def outcomes(b: Bundle, kernel: str) -> dict[tuple[str, str], list[str]]:
    """(test, case) -> its result in each repetition."""
    out: dict[tuple[str, str], list[str]] = {}
    for _, c in kernel_cases(b, kernel):
        out.setdefault((c.test, c.case), []).append(c.result)
    return out


def has_selftests(b: Bundle) -> bool:
    return any(Path(b.path).glob(f"*/rep*/{SELFTEST_FILE}"))


@dataclass
class SelftestGate:
    regressions: list[str] = field(default_factory=list)  # "test: case" passed on baseline, fails on candidate
    flaky: list[str] = field(default_factory=list)  # "test: case (kernel: pass, fail, ...)"
    fixed: list[str] = field(default_factory=list)  # failed on the baseline, passes on the candidate
    new_failures: list[str] = field(default_factory=list)  # fails on the candidate, did not pass on the baseline
    compared: int = 0

    def to_json(self) -> dict:
        return {"regressions": self.regressions, "flaky": self.flaky, "fixed": self.fixed,
                "new_failures": self.new_failures, "compared": self.compared}

    def lines(self) -> list[str]:
        out = [f"REGRESSION selftest {x}: passed on the baseline, fails on the candidate" for x in self.regressions]
        out += [f"FLAKY selftest {x}" for x in self.flaky]
        out += [f"selftest {x}: fails on the candidate, did not pass on the baseline" for x in self.new_failures]
        out += [f"fixed selftest {x}: failed on the baseline, passes on the candidate" for x in self.fixed]
        return out

    def summary(self) -> str:
        return (f"selftests: {len(self.regressions)} regression(s), {len(self.flaky)} flaky, "
                f"{len(self.fixed)} fixed, {self.compared} case(s) compared")


def gate(a: Bundle, ka: str, b: Bundle, kb: str) -> SelftestGate:
    base, cand = outcomes(a, ka), outcomes(b, kb)
    g = SelftestGate()
    for key in sorted(set(base) | set(cand)):
        name = f"{key[0]}: {key[1]}"
        ra, rb = base.get(key, []), cand.get(key, [])
        for kernel, results in ((ka, ra), (kb, rb)):
            if len(set(results) - {SKIP}) > 1:
                g.flaky.append(f"{name} ({kernel}: {', '.join(results)})")
        if not ra or not rb:
            if rb and set(rb) == {FAIL}:
                # A case only the candidate has (a test that bailed out part-way, say) in a test that ran
                # clean on the baseline is a regression of that test.
                (g.regressions if _clean_on(base, key[0]) else g.new_failures).append(name)
            continue
        g.compared += 1
        if set(ra) == {PASS} and set(rb) == {FAIL}:
            g.regressions.append(name)
        elif set(ra) == {FAIL} and set(rb) == {PASS}:
            g.fixed.append(name)
        elif set(rb) == {FAIL} and PASS not in ra:
            g.new_failures.append(name)
    return g


def _clean_on(results: dict[tuple[str, str], list[str]], test: str) -> bool:
    """The test ran on that kernel, some case passed, and none ever failed."""
    seen = [r for (t, _), rs in results.items() if t == test for r in rs]
    return PASS in seen and FAIL not in seen


def _cell(cases: list[SelftestCase], reps: int) -> str:
    counts = {r: sum(c.result == r for c in cases) // max(reps, 1) for r in (PASS, FAIL, SKIP)}
    if not cases:
        return "-"
    if counts[SKIP] and not counts[PASS] and not counts[FAIL]:
        return "skip"
    parts = [f"{counts[PASS]} pass"] + [f"**{counts[FAIL]} fail**"] * bool(counts[FAIL])
    parts += [f"{counts[SKIP]} skip"] * bool(counts[SKIP])
    return ", ".join(parts)


def table_markdown(b: Bundle) -> str:
    """One row per selftest, one column per kernel (cases per repetition: pass, fail, skip), the skip reasons,
    then every failing case by kernel."""
    kernels = b.kernels
    per = {k: kernel_cases(b, k) for k in kernels}
    reps = {k: len({rep for rep, _ in per[k]}) for k in kernels}
    tests = list(dict.fromkeys(c.test for k in kernels for _, c in per[k]))
    lines = ["| test | " + " | ".join(kernels) + " | skipped because |",
             "|---|" + "---|" * len(kernels) + "---|"]
    for t in tests:
        cells = [_cell([c for _, c in per[k] if c.test == t], reps[k]) for k in kernels]
        reasons = sorted({c.reason for k in kernels for _, c in per[k] if c.test == t and c.result == SKIP and c.reason})
        why = "; ".join(r.replace("|", "\\|")[:120] for r in reasons[:3]) + (f" (+{len(reasons) - 3} more)"
                                                                             if len(reasons) > 3 else "")
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {why} |")
    failures = [(k, rep, c) for k in kernels for rep, c in per[k] if c.result == FAIL]
    if failures:
        lines += ["", "Failing cases:", ""]
        lines += [f"- {k} rep{rep}: {c.test}: {c.case}" + (f" ({c.reason})" if c.reason else "")
                  for k, rep, c in failures]
    return "\n".join(lines) + "\n"
