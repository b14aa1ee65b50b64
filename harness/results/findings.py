"""The report's summary: findings (leaks, failed runs and expectations, regressions and improvements), grouped
per scenario with the bundle linked once, worst first; kernels named by their stack (kernel_patches/stacks.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.kernels.stacks import display_name as kernel_label
from harness.results import stats
from harness.results.bundle import Bundle
from harness.results.compare import KernelComparison, fmt_num
from harness.results.metrics import COUNTER, definition
from harness.scenario.expectations import EXPECTED_LEAK, LEAK

SEVERITY = {"leak": 0, "failed": 1, "regression": 2, "improvement": 3}


@dataclass
class Link:
    text: str
    href: str


@dataclass
class Finding:
    kind: str  # leak, failed, regression, improvement
    text: str
    links: list[Link]  # evidence beyond the group's own links
    against: str = ""  # "baseline" or "last night": what a regression or improvement is against
    scenario: str = ""  # "" for what belongs to no scenario (an unreadable bundle)
    timing: bool = False  # a judged timing (shown before the counters of its kind)


@dataclass
class FindingGroup:
    title: str
    links: list[Link]  # the scenario's card and its bundle, once
    findings: list[Finding] = field(default_factory=list)


def human(v: float | None) -> str:
    """fmt_num with thousands grouped: 204,800 pages, 1,234.5 ms."""
    text = fmt_num(v)
    if v is None or not re.fullmatch(r"-?\d{4,}(\.\d+)?", text):
        return text
    whole, _, frac = text.partition(".")
    return f"{int(whole):,}" + (f".{frac}" if frac else "")


def _judged_text(c: KernelComparison, row, against: str) -> str:
    j = row.judgement
    d = definition(j.name)
    who = f"{kernel_label(c.other)} vs {kernel_label(c.base)}" if against == "baseline" else \
        f"{kernel_label(c.other)} vs last night"
    if d.kind == COUNTER:  # a count that went from 0 to 372 is "0 -> 372", not "+inf %"
        return f"{who}: {j.name} @ {row.phase or '-'} {human(j.a.median)} -> {human(j.b.median)} {d.unit}".rstrip()
    p = "" if j.p is None else f", p={j.p:.2g}"
    return (f"{who}: {j.name} @ {row.phase or '-'} {human(j.a.median)} -> {human(j.b.median)} "
            f"{d.unit} ({stats.format_change(j.change_pct)}{p}; threshold {row.threshold_pct:.3g} % "
            f"{'from A/A' if row.threshold_source.startswith('A/A') else 'fixed'})")


def flagged_findings(comparisons: list[KernelComparison], against: str, scenario: str,
                     evidence: list[Link] | None = None) -> list[Finding]:
    return [Finding(r.judgement.verdict, _judged_text(c, r, against), evidence or [], against, scenario,
                    definition(r.judgement.name).kind != COUNTER)
            for c in comparisons for r in c.rows if r.judgement.flagged]


def failure_findings(b: Bundle) -> list[Finding]:
    out = []
    if b.status != "complete":
        out.append(Finding("failed", f"run {b.path.name} ({b.scenario}) {b.status}: {b.error or 'no error recorded'}",
                           [], scenario=b.scenario))
    out += [Finding("failed", f"expectation {r.name} failed on {kernel_label(r.kernel) if r.kernel else 'the run'} "
                              f"({b.scenario}): {r.detail}", [], scenario=b.scenario)
            for r in b.expectations if not r.ok and r.name not in (LEAK, EXPECTED_LEAK)]
    return out


def group_findings(findings: list[Finding], links: dict[str, list[Link]]) -> list[FindingGroup]:
    """Per scenario (`links`: its card and bundle), worst group first; inside one: leaks, failures, regressions
    (timings before counters, against the baseline before last night), improvements."""
    groups: dict[str, FindingGroup] = {}
    for f in findings:
        title = f.scenario or "other"
        groups.setdefault(f.scenario, FindingGroup(title, links.get(f.scenario, []))).findings.append(f)
    for g in groups.values():
        g.findings.sort(key=lambda f: (SEVERITY.get(f.kind, 4), not f.timing, f.against != "baseline"))
    return sorted(groups.values(), key=lambda g: (min(SEVERITY.get(f.kind, 4) for f in g.findings), g.title))
