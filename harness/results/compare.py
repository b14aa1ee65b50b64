"""`harness compare A [B]`: judge the metrics of kernels against a baseline kernel.

* ``compare A B``: two bundles.  With one kernel each, B's kernel is compared against A's.  Otherwise
  kernels with the same slug are paired; failing that, A's first kernel is the baseline for each of
  B's kernels.
* ``compare A``: one bundle with several kernels; its first kernel (manifest ``kernels``) is the
  baseline and each other kernel is compared against it.

Metrics are matched by (name, phase) and judged by :mod:`harness.results.stats` (change of medians, bootstrap
CI, Mann-Whitney U; counters by a no-overlap rule).  Timings from different accelerators, QEMU
versions or host CPUs are not judged; counters and memory still are.

Exit status: 0 nothing regressed, 1 something regressed, 2 bad input.  A failed bundle is compared
as far as its metrics go, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import yaml
from pydantic import ValidationError

from harness.errors import InputError
from harness.numbers import fmt_num
from harness.results import stats
from harness.results.bundle import Bundle
from harness.results.metrics import TIME, definition
from harness.results.selftests import SelftestGate, has_selftests
from harness.results.selftests import gate as selftest_gate
from harness.scenario.expectations import EXPECTED_LEAK, LEAK
from harness.scenario.schema import GuestOptions, QemuOptions

# ---------------------------------------------------------------------------------------------- bundles


def environment(b: Bundle) -> dict[str, str | None]:
    """What timings depend on: accelerator, timing mode, QEMU version and machine type, host CPU."""
    qemu, host = b.manifest.qemu, b.manifest.host
    return {"accel": b.accel, "timing": b.timing, "QEMU": qemu.version if qemu else None,
            "machine": machine_type(b), "host CPU": host.cpu if host else None}


def machine_type(b: Bundle) -> str:
    """The QEMU machine type the bundle's guests ran on: bundles that do not record one ran pc (q35 is the
    default since 2026-12-06)."""
    return str((b.manifest.machine or {}).get("machine_type", "pc"))


def timing_comparability(a: Bundle, b: Bundle) -> tuple[bool, str]:
    """(comparable, one-line reason when not)."""
    if a.path == b.path:
        return True, ""
    ea, eb = environment(a), environment(b)
    diffs = [f"{k} {ea[k]} vs {eb[k]}" for k in ea if ea[k] != eb[k]]
    if not diffs:
        return True, ""
    return False, "timings not judged: " + "; ".join(diffs)


def configuration(b: Bundle, recorded: bool = True) -> dict | None:
    """The machine the bundle ran on (its timing mode is judged apart): as the manifest records it, else (older
    bundles, or `recorded` False) as its scenario asked for it; None when neither is there."""
    if recorded and b.manifest.machine is not None:
        machine = {"machine_type": machine_type(b), **b.manifest.machine}
        return {"machine": {k: v for k, v in machine.items() if k != "timing"}}
    sc = b.manifest.scenario
    content = getattr(sc, "content", None)
    if not content:
        return None
    try:
        data = yaml.safe_load(content)
        guest = GuestOptions.model_validate(data.get("guest") or {})
        qemu = QemuOptions.model_validate(data.get("qemu") or {})
    except (yaml.YAMLError, ValidationError, AttributeError):
        return None
    # The machine type it ran, not the scenario's default: an older bundle's scenario reads as q35, it ran pc.
    return {"guest": guest.model_dump(), "qemu": {**qemu.model_dump(exclude={"timing"}), "machine": machine_type(b)}}


def check_same_configuration(a: Bundle, b: Bundle) -> None:
    """Kernels are only ever paired within one configuration (guest size, vCPUs, command line, QEMU device):
    the same kernel in two configurations is two measurements, not a change."""
    recorded = a.manifest.machine is not None and b.manifest.machine is not None  # else both from the scenario
    ca, cb = configuration(a, recorded), configuration(b, recorded)
    if ca is None or cb is None or ca == cb:
        return
    diffs = [f"{part}.{key} {ca[part][key]!r} vs {cb[part][key]!r}" for part in ca for key in ca[part]
             if ca[part][key] != cb[part].get(key)]
    raise InputError(f"{a.path.name} and {b.path.name} ran different configurations ({'; '.join(diffs)}): "
                     "compare pairs kernels only within one configuration")


# ------------------------------------------------------------------------------------------ comparison


@dataclass
class Row:
    phase: str
    judgement: stats.Judgement
    a_values: list[float]
    b_values: list[float]
    threshold_pct: float = stats.DEFAULT_THRESHOLD_PCT
    threshold_source: str = ""  # "fixed 5 %" or the A/A run it was calibrated on (harness.results.calibration)

    def to_json(self) -> dict:
        return {**self.judgement.to_json(), "phase": self.phase, "a_values": self.a_values, "b_values": self.b_values,
                "threshold_pct": self.threshold_pct, "threshold_source": self.threshold_source or None}


@dataclass
class KernelComparison:
    base: str
    other: str
    base_bundle: Bundle
    other_bundle: Bundle
    timings_comparable: bool
    reason: str
    rows: list[Row] = field(default_factory=list)
    only_base: list[tuple[str, str]] = field(default_factory=list)
    only_other: list[tuple[str, str]] = field(default_factory=list)
    selftests: SelftestGate | None = None  # when either side ran selftests

    @property
    def regressed(self) -> bool:
        return bool(self.count(stats.REGRESSION) or (self.selftests and self.selftests.regressions))

    def count(self, verdict: str) -> int:
        return sum(r.judgement.verdict == verdict for r in self.rows)

    def to_json(self) -> dict:
        return {
            "base": {"kernel": self.base, "bundle": str(self.base_bundle.path)},
            "other": {"kernel": self.other, "bundle": str(self.other_bundle.path)},
            "timings_comparable": self.timings_comparable,
            "timings_reason": self.reason or None,
            "regressions": self.count(stats.REGRESSION),
            "improvements": self.count(stats.IMPROVEMENT),
            "metrics": [r.to_json() for r in self.rows],
            "only_in_base": [{"name": n, "phase": p} for n, p in self.only_base],
            "only_in_other": [{"name": n, "phase": p} for n, p in self.only_other],
            "selftests": self.selftests.to_json() if self.selftests else None,
        }


class ThresholdLike(Protocol):
    """A per-metric threshold (harness.results.calibration.Threshold): percent, and where it came from."""

    @property
    def pct(self) -> float: ...

    @property
    def source(self) -> str: ...


def compare_kernels(a: Bundle, ka: str, b: Bundle, kb: str, threshold_pct: float,
                    threshold_for: Callable[[str, str], ThresholdLike] | None = None) -> KernelComparison:
    """threshold_for(name, phase): a per-metric threshold (A/A calibration) instead of threshold_pct."""
    comparable, reason = timing_comparability(a, b)
    jobs_a, jobs_b = a.manifest.jobs or 1, b.manifest.jobs or 1
    sa, sb = a.samples(ka), b.samples(kb)
    cmp = KernelComparison(ka, kb, a, b, comparable, reason)
    for key, av in sa.items():
        if key not in sb:
            cmp.only_base.append(key)
            continue
        name, phase = key
        judge_it = comparable or definition(name).kind != TIME
        if judge_it and jobs_a != jobs_b and definition(name).host_clock:
            # Guests beside each other slow the host-time figures, not the guest-time ones (--jobs, icount).
            judge_it, row_reason = False, f"host-time figure: the bundles ran {jobs_a} and {jobs_b} guests at once"
        else:
            row_reason = reason
        pct, source = threshold_pct, f"fixed {threshold_pct:g} %"
        if threshold_for is not None:
            t = threshold_for(name, phase)
            pct, source = t.pct, t.source
        j = stats.judge(name, av, sb[key], threshold_pct=pct, comparable=judge_it, reason=row_reason,
                        deterministic=comparable and a.timing == "icount")
        cmp.rows.append(Row(phase, j, av, sb[key], pct, source))
    cmp.only_other = [k for k in sb if k not in sa]
    if has_selftests(a) or has_selftests(b):
        cmp.selftests = selftest_gate(a, ka, b, kb)
    return cmp


def plan_pairs(a: Bundle, b: Bundle | None) -> list[tuple[Bundle, str, Bundle, str]]:
    """Which kernel is compared against which (see the module doc)."""
    ka = a.kernels
    if b is None:
        if len(ka) < 2:
            raise InputError(f"{a.path}: has {len(ka)} kernel(s); give a second bundle to compare against")
        return [(a, ka[0], a, k) for k in ka[1:]]
    check_same_configuration(a, b)
    kb = b.kernels
    if not ka or not kb:
        empty = a if not ka else b
        raise InputError(f"{empty.path}: no kernels in manifest or metrics")
    if len(ka) == 1 and len(kb) == 1:
        return [(a, ka[0], b, kb[0])]
    slugs_b = {b.kernel_slug(k): k for k in kb}
    shared = [(k, slugs_b[a.kernel_slug(k)]) for k in ka if a.kernel_slug(k) in slugs_b]
    if shared:
        return [(a, x, b, y) for x, y in shared]
    return [(a, ka[0], b, k) for k in kb]


def bundle_warnings(bundles: list[Bundle]) -> list[str]:
    out = []
    for b in bundles:
        if b.status != "complete":
            out.append(f"bundle {b.path} has status {b.status}: {b.error or 'no error recorded'}")
    return out


def run_compare(a: Bundle, b: Bundle | None, threshold_pct: float,
                threshold_for: Callable[[str, str], ThresholdLike] | None = None) -> list[KernelComparison]:
    return [compare_kernels(*pair, threshold_pct, threshold_for) for pair in plan_pairs(a, b)]


# --------------------------------------------------------------------------------------------- output


def _spread(s: stats.Summary, kind: str) -> str:
    if kind == "counter":
        return f"Σ{fmt_num(s.total)}"
    cv = "-" if s.cv is None else f"{s.cv * 100:.1f}%"
    return f"{fmt_num(s.mean)}±{fmt_num(s.stddev)} cv {cv}"


VERDICT_MARK = {
    stats.REGRESSION: "REGRESSION",
    stats.IMPROVEMENT: "improvement",
    stats.UNCHANGED: "",
    stats.INFO: "info",
    stats.NOT_JUDGED: "not judged",
    stats.TOO_FEW: "too few samples",
}

COLUMNS = ["metric", "phase", "unit", "n", "A median", "B median", "change", "95% CI", "p", "verdict",
           "A mean±sd (counters: Σ)", "B mean±sd (counters: Σ)"]


def table_cells(r: Row) -> list[str]:
    j = r.judgement
    ci = "-" if j.ci_low is None else f"[{j.ci_low:+.1f}, {j.ci_high:+.1f}]"
    p = "-" if j.p is None else f"{j.p:.2g}"
    return [
        j.name, r.phase or "-", definition(j.name).unit, f"{j.a.n}/{j.b.n}",
        fmt_num(j.a.median), fmt_num(j.b.median), stats.format_change(j.change_pct), ci, p,
        VERDICT_MARK[j.verdict], _spread(j.a, j.kind), _spread(j.b, j.kind),
    ]


def title(c: KernelComparison) -> str:
    if c.base_bundle.path == c.other_bundle.path:
        return f"{c.other} vs {c.base} (baseline), bundle {c.base_bundle.path.name}"
    return f"{c.other} ({c.other_bundle.path.name}) vs {c.base} ({c.base_bundle.path.name}, baseline)"


def summary_line(c: KernelComparison) -> str:
    too_few = c.count(stats.TOO_FEW)
    return (f"{c.count(stats.REGRESSION)} regression(s), {c.count(stats.IMPROVEMENT)} improvement(s), "
            f"{len(c.rows)} metric(s) compared"
            + (f"; {too_few} change(s) above the threshold with too few samples to test (use at least 4 "
               f"repetitions)" if too_few else ""))


def leak_findings(bundles: list[Bundle]) -> list[str]:
    """Every kernel in these bundles that handed userspace a non-zero page it was not declared to: the first
    thing compare says, and always exit 1.  Bundles from before the no_leak row are read from nonzero_pages."""
    out = []
    for b in bundles:
        declared = {r.kernel for r in b.expectations if r.name == EXPECTED_LEAK}
        rows = [r for r in b.expectations if r.name == LEAK]
        if rows:
            out += [f"LEAK on {r.kernel} ({b.path.name}): {r.detail.removeprefix('LEAK: ')}" for r in rows if not r.ok]
            continue
        for kernel in b.kernels:
            if kernel in declared:
                continue
            leaked = {phase: v for (name, phase), vals in b.samples(kernel).items() if name == "nonzero_pages"
                      for v in vals if v}
            if leaked:
                out.append(f"LEAK on {kernel} ({b.path.name}): non-zero pages handed out in "
                           + ", ".join(f"{phase} ({fmt_num(v)})" for phase, v in leaked.items()))
    return out


def threshold_notes(comparisons: list[KernelComparison]) -> list[str]:
    """One line per metric judged with a threshold from A/A calibration: which, and where it came from."""
    seen: dict[tuple[str, str], str] = {}
    for c in comparisons:
        for r in c.rows:
            if r.threshold_source.startswith("A/A"):
                seen.setdefault((r.judgement.name, r.phase), f"{r.threshold_pct:.3g} % ({r.threshold_source})")
    return [f"threshold {name}@{phase or '-'}: {text}" for (name, phase), text in seen.items()]


def md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(comparisons: list[KernelComparison], warnings: list[str], threshold_pct: float,
                leaks: list[str] | None = None) -> str:
    leaks = leaks or []
    lines = [f"> **{md_escape(leak)}**" for leak in leaks] + ([""] if leaks else [])
    lines += [f"Change = % change of medians; flagged when p < {stats.ALPHA} and |change| > {threshold_pct:g}% "
             "(counters: no overlap and |change| > threshold).", ""]
    lines += [f"> **warning:** {md_escape(w)}" for w in warnings]
    for c in comparisons:
        lines += ["", f"### {md_escape(title(c))}", ""]
        if c.reason:
            lines += [f"> {c.reason}", ""]
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in c.rows:
            cells = table_cells(r)
            if r.judgement.flagged:
                cells[9] = f"**{cells[9]}**"
            lines.append("| " + " | ".join(md_escape(x) for x in cells) + " |")
        lines += ["", summary_line(c)]
        if c.selftests:
            lines += ["", c.selftests.summary()] + [f"- {md_escape(x)}" for x in c.selftests.lines()]
        for label, keys in (("only in baseline", c.only_base), ("only in other", c.only_other)):
            if keys:
                lines.append(f"{label}: " + ", ".join(f"{n}@{p or '-'}" for n, p in keys))
    return "\n".join(lines) + "\n"


def to_json(comparisons: list[KernelComparison], bundles: list[Bundle], warnings: list[str],
            threshold_pct: float, leaks: list[str] | None = None) -> dict:
    return {
        "leaks": leaks or [],
        "change_of": "median",
        "threshold_pct": threshold_pct,
        "alpha": stats.ALPHA,
        "bundles": [{"path": str(b.path), "status": b.status, "error": b.error, "scenario": b.scenario,
                     "kernels": b.kernels, **environment(b)} for b in bundles],
        "warnings": warnings,
        "regressed": any(c.regressed for c in comparisons),
        "comparisons": [c.to_json() for c in comparisons],
    }


FULL_WIDTH = 190  # the full table needs about this many columns


def _compact(cells: list[str]) -> list[str]:
    """metric@phase, medians A -> B with unit, change [CI], p, verdict: fits about 100 columns."""
    name, phase, unit, n, ma, mb, change, ci, p, verdict = cells[:10]
    return [f"{name} @ {phase}", f"{ma} -> {mb} {unit}\nn={n}", f"{change}\n{ci}", p, verdict]


def print_rich(comparisons: list[KernelComparison], warnings: list[str], threshold_pct: float,
               leaks: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # CI logs and pipes: don't fold the table to 80 columns
        console = Console(width=max(console.width, FULL_WIDTH))
    for leak in leaks or []:
        console.print(f"[bold white on red] LEAK [/] {escape(leak.removeprefix('LEAK '))}", highlight=False)
    compact = console.width < FULL_WIDTH
    columns = ["metric @ phase", "median A -> B", "change [95% CI]", "p", "verdict"] if compact else COLUMNS
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    style = {stats.REGRESSION: "bold red", stats.IMPROVEMENT: "bold green", stats.NOT_JUDGED: "dim",
             stats.TOO_FEW: "yellow"}
    for c in comparisons:
        table = Table(title=title(c), caption=c.reason or None)
        for col in columns:
            left = col.startswith(("metric", "phase", "verdict"))
            wrap = col != "verdict"
            table.add_column(col, justify="left" if left else "right", no_wrap=not wrap,
                             min_width=16 if col.startswith("metric") else None, overflow="fold")
        for r in c.rows:
            cells = table_cells(r)
            table.add_row(*(_compact(cells) if compact else cells), style=style.get(r.judgement.verdict))
        console.print(table)
        console.print(summary_line(c), highlight=False)
        if c.selftests:
            console.print(c.selftests.summary(), highlight=False)
            for line in c.selftests.lines():
                mark = "bold red" if line.startswith("REGRESSION") else "yellow" if line.startswith("FLAKY") else ""
                console.print(f"[{mark}]{escape(line)}[/]" if mark else escape(line), highlight=False)
    console.print(f"change = % change of medians; flagged when p < {stats.ALPHA} and |change| > "
                  f"{threshold_pct:g}% (counters: samples do not overlap and |change| > threshold)"
                  + ("; mean, stddev, CV: widen the terminal or use --md/--json" if compact else ""),
                  highlight=False)
