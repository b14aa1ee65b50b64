"""`harness report RESULTS_DIR --out DIR [--history DIR]`: a static HTML report (index.html) and report.md.

It answers first: the first screen lists leaks, failed runs and expectations, then the regressions and
improvements against each scenario's baseline kernel and against last night, each linking to its evidence.
Then one card per scenario (its latest bundle): the headline metrics per kernel, the plots (host RSS over
time with the phases as bands, fault-in distributions, zeroing per phase, headline trends over the history),
and the full per-metric table folded.  The thresholds come from A/A calibration where an A/A run measured
the metric (:mod:`harness.results.calibration`), else the fixed default, and the report says which.
Then every run directory, folded.  Images are PNG files beside the HTML: it works offline.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.kernels.stacks import display_name as kernel_label
from harness.results import plots, stats
from harness.results.bundle import Bundle
from harness.results.calibration import Calibration, ThresholdFor, describe_kind
from harness.results.compare import KernelComparison, Row, compare_kernels, leak_findings, run_compare
from harness.results.findings import (
    Finding,
    FindingGroup,
    Link,
    failure_findings,
    flagged_findings,
    group_findings,
    human,
)
from harness.results.history import Night, load_history, load_night, trend
from harness.results.metrics import definition, is_headline

MARKER = ".harness-report"  # marks an output directory so a later scan of RESULTS_DIR skips it
LOG_NAMES = ("serial.log", "transcript.log")
MAX_HEADLINES = 8
CALIBRATION_NIGHTS = 14  # A/A runs of the last two weeks set the thresholds: a runner that changed is not stuck with old noise
TEMPLATES = Path(__file__).with_name("templates")


Cell = str | Link | list  # a list holds several str/Link pieces


def rel(target: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()


# -------------------------------------------------------------------------------------- the run index


@dataclass
class Entry:
    name: str
    path: Path | None
    bundle: Bundle | None = None
    problem: str | None = None  # why it is not a readable bundle, or why a run has no bundle
    logs: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.bundle is not None:
            return self.bundle.status
        return "no bundle" if self.path is None else "unparsable"


def entries_of(night: Night) -> list[Entry]:
    """Every run directory of a night, readable or not, oldest first."""
    entries = [Entry(b.path.name, b.path, bundle=b) for b in night.bundles]
    entries += [Entry(d.name, d, problem=why) for d, why in night.unreadable]
    for e in entries:
        e.logs = sorted(p for name in LOG_NAMES for p in e.path.glob(f"**/{name}")) if e.path else []
    return sorted(entries, key=lambda e: e.name)


def index_table(entries: list[Entry], out_dir: Path) -> tuple[list[str], list[list[Cell]]]:
    head = ["run", "status", "scenario", "kernels", "accel", "started", "error", "logs"]
    rows = []
    for e in entries:
        b = e.bundle
        logs: list = []
        if e.status != "complete" and e.path:
            logs = [Link(f"{p.parent.relative_to(e.path).as_posix()}/{p.name}", rel(p, out_dir)) for p in e.logs]
        rows.append([
            Link(e.name, rel(e.path, out_dir)) if e.path else e.name,
            e.status,
            b.scenario if b else "-",
            ", ".join(map(kernel_label, b.kernels)) if b else "-",
            (b.accel or "-") if b else "-",
            (b.started or "-") if b else "-",
            (b.error or "") if b else (e.problem or ""),
            logs or ("-" if e.status != "complete" else ""),
        ])
    return head, rows


# ------------------------------------------------------------------------------------------- the cards


@dataclass
class Card:
    scenario: str
    anchor: str
    bundle: Link
    status: str
    provenance: str
    headline: tuple[list[str], list[list[Cell]]]
    full: tuple[list[str], list[list[Cell]]]
    images: list[tuple[str, str]] = field(default_factory=list)  # (file, alt)
    notes: list[str] = field(default_factory=list)


def provenance(b: Bundle) -> str:
    m = b.manifest.machine
    guest = (f", guest {m['memory_mib']} MiB x {m['cpus']} vCPU on {m['memory_backend']} RAM"
             + (", free page reporting" if m.get("free_page_reporting") else "")) if m else ""
    return (f"{b.started[:16].replace('T', ' ') or '?'} UTC, accelerator {b.accel or '?'}, timing {b.timing}, "
            f"{b.manifest.reps or '?'} repetition(s) per kernel{guest}")


def headline_keys(b: Bundle) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for k in b.kernels:
        for (name, phase), vals in b.samples(k).items():
            if is_headline(name) and (name == "nonzero_pages" or any(vals)) and (name, phase) not in keys:
                keys.append((name, phase))
    return keys[:MAX_HEADLINES]


def _verdict_mark(j: stats.Judgement) -> str:
    return f" {j.verdict.upper()}" if j.flagged else ""


def _change_note(r: Row, against: str) -> str:
    """'+3.1% vs baseline', with why a visible change was not flagged: too few samples, or within the noise."""
    j = r.judgement
    text = f"{stats.format_change(j.change_pct)} vs {against}{_verdict_mark(j)}"
    if j.verdict == stats.TOO_FEW:
        return text + " (too few samples to test)"
    if j.verdict == stats.UNCHANGED and abs(j.change_pct) > min(r.threshold_pct, stats.DEFAULT_THRESHOLD_PCT):
        return text + f" (within threshold {r.threshold_pct:.3g} %)"
    return text


def headline_table(b: Bundle, base: list[KernelComparison], night: list[KernelComparison],
                   keys: list[tuple[str, str]]) -> tuple[list[str], list[list[Cell]]]:
    vs_base = {(c.other, r.judgement.name, r.phase): r for c in base for r in c.rows}
    vs_night = {(c.other, r.judgement.name, r.phase): r for c in night for r in c.rows}
    head = ["metric @ phase"] + [kernel_label(k) + (" (baseline)" if i == 0 and len(b.kernels) > 1 else "")
                                 for i, k in enumerate(b.kernels)]
    rows: list[list[Cell]] = []
    for name, phase in keys:
        row: list[Cell] = [f"{name} @ {phase or '-'} ({definition(name).unit or 'count'})"]
        for i, k in enumerate(b.kernels):
            vals = b.samples(k).get((name, phase))
            if not vals:
                row.append("-")
                continue
            parts: list = [f"{human(stats.summarize(vals).median)} (n={len(vals)})"]
            r = vs_base.get((k, name, phase))
            if i > 0 and r is not None:
                parts.append(_change_note(r, "baseline"))
            r = vs_night.get((k, name, phase))
            if r is not None:
                parts.append(_change_note(r, "last night"))
            row.append(parts)
        rows.append(row)
    return head, rows


def full_table(b: Bundle, comparisons: list[KernelComparison]) -> tuple[list[str], list[list[Cell]]]:
    kernels = b.kernels
    samples = {k: b.samples(k) for k in kernels}
    keys: list[tuple[str, str]] = []
    for k in kernels:
        keys += [key for key in samples[k] if key not in keys]
    judged = {(c.other, r.judgement.name, r.phase): r for c in comparisons for r in c.rows}
    head = (["metric", "phase", "unit"]
            + [kernel_label(k) + (" (baseline)" if i == 0 else "") for i, k in enumerate(kernels)]
            + (["threshold"] if len(kernels) > 1 else []))
    rows = []
    for name, phase in keys:
        row: list[Cell] = [name, phase or "-", definition(name).unit]
        threshold = ""
        for i, k in enumerate(kernels):
            vals = samples[k].get((name, phase))
            if not vals:
                row.append("-")
                continue
            cell = f"{human(stats.summarize(vals).median)} (n={len(vals)})"
            r = judged.get((k, name, phase))
            if i > 0 and r is not None:
                cell += f" {stats.format_change(r.judgement.change_pct)}{_verdict_mark(r.judgement)}"
                threshold = f"{r.threshold_pct:.3g} % ({r.threshold_source})"
            row.append(cell)
        rows.append(row + ([threshold or "-"] if len(kernels) > 1 else []))
    return head, rows


def trend_series(nights: list[Night], b: Bundle, keys: list[tuple[str, str]]) -> dict:
    return {key: {k: trend(nights, b.scenario, k, *key) for k in b.kernels} for key in keys}


# ------------------------------------------------------------------------------------------ the report


@dataclass
class Report:
    title: str
    generated: str
    context: str
    findings: list[Finding]
    groups: list[FindingGroup]  # the findings per scenario, worst first
    calibration: list[list[str]]
    calibration_note: str
    cards: list[Card]
    index: tuple[list[str], list[list[Cell]]]
    history_note: str


def night_label(night: Night) -> str:
    days = sorted(b.started[:10] for b in night.bundles if b.started)
    return days[-1] if days else night.name


def build_model(results_dir: Path, out_dir: Path, extra: list[Entry], threshold_pct: float,
                history: list[Night]) -> Report:
    tonight = load_night(results_dir)
    tonight.name = f"tonight ({night_label(tonight)})"
    last = history[-1] if history else None
    calibration = Calibration.from_nights([*history[-CALIBRATION_NIGHTS:], tonight])
    latest = tonight.latest_per_scenario()
    findings: list[Finding] = []
    for b in latest.values():
        evidence = [Link(f"{b.path.name}/steps.json", rel(b.path, out_dir))]
        findings += [Finding("leak", text, evidence, scenario=b.scenario) for text in leak_findings([b])]
    for b in tonight.bundles:
        if b.status != "complete" or any(not r.ok for r in b.expectations):
            older = latest.get(b.scenario) is not b  # the group links the latest bundle of its scenario
            findings += [replace(f, links=[Link(b.path.name, rel(b.path, out_dir))] if older else [])
                         for f in failure_findings(b)]
    findings += [Finding("failed", f"{d.name}: not a readable bundle: {why}", [Link(d.name, rel(d, out_dir))])
                 for d, why in tonight.unreadable]
    findings += [Finding("failed", f"{e.name}: {e.problem}", []) for e in extra]
    group_links: dict[str, list[Link]] = {}
    cards: list[Card] = []
    judged: list[Finding] = []
    used: set[str] = set()
    for scenario, b in latest.items():
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", scenario)
        while slug in used:
            slug += "_"
        used.add(slug)
        thr: ThresholdFor | None = calibration.threshold_for(b, threshold_pct) if calibration else None
        base = run_compare(b, None, threshold_pct, thr) if len(b.kernels) > 1 else []
        prev = last.latest_per_scenario().get(scenario) if last else None
        night = [compare_kernels(prev, k, b, k, threshold_pct, thr) for k in b.kernels
                 if prev is not None and k in prev.kernels]
        group_links[scenario] = [Link(f"card {scenario}", f"#{slug}"), Link(b.path.name, rel(b.path, out_dir))]
        judged += flagged_findings(base, "baseline", scenario)
        if prev is not None:
            judged += flagged_findings(night, "last night", scenario,
                                       [Link(f"last night: {prev.path.name}", rel(prev.path, out_dir))])
        keys = headline_keys(b)
        status = b.status if b.status == "complete" else f"{b.status.upper()}: {b.error or 'no error recorded'}"
        card = Card(scenario, slug, Link(b.path.name, rel(b.path, out_dir)), status, provenance(b),
                    headline_table(b, base, night, keys), full_table(b, base))
        card.notes += [f"Zeroing on {kernel_label(k.spec or '?')} counted by {k.zeroing_summary()}."
                       for k in b.manifest.kernels
                       if k.zeroing_summary()]
        if last is None:
            card.notes.append("No history given (--history): no trends, nothing judged against last night.")
        elif prev is None:
            card.notes.append(f"Last night ({last.name}) has no {scenario} run: nothing judged against it.")
        _plots(card, b, out_dir, slug, [*history, tonight] if history else [], keys)
        cards.append(card)
    findings += judged
    kinds = sorted({describe_kind(k) for k in calibration.observations})
    return Report(
        title=f"balloon testbed report: {results_dir}",
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        context=_context(tonight),
        findings=findings,
        groups=group_findings(findings, group_links),
        calibration=[[describe_kind(kind), scenario, name, phase or "-", f"{t.pct:.3g} %", t.source]
                     for kind in calibration.observations
                     for (scenario, name, phase), t in sorted(calibration.thresholds(kind).items())],
        calibration_note=(f"Metrics without an A/A measurement on their runner kind use the fixed {threshold_pct:g} % "
                          f"threshold. Rule: max(1 %, 2 x A/A CV, largest A/A change of medians) over tonight's and the last "
                          f"{CALIBRATION_NIGHTS} nights' A/A runs of the same "
                          f"scenario (aa-X calibrates X), else, for timings and memory, of another; "
                          f"runner kinds with A/A runs: {'; '.join(kinds)}." if kinds else
                          f"No A/A run (one kernel against itself) found tonight or in the history: every metric "
                          f"uses the fixed {threshold_pct:g} % threshold."),
        cards=cards,
        index=index_table(entries_of(tonight) + extra, out_dir),
        history_note=(f"History: {len(history)} earlier night(s), {history[0].name} to {history[-1].name}; "
                      f"last night = {history[-1].name}." if history else "No history given."),
    )


def _context(night: Night) -> str:
    accels = sorted({b.accel or "?" for b in night.bundles})
    timings = sorted({b.timing for b in night.bundles})
    n_bad = sum(b.status != "complete" for b in night.bundles) + len(night.unreadable)
    return (f"{len(night.bundles) + len(night.unreadable)} run(s), {n_bad} not complete; accelerator "
            f"{', '.join(accels) or '-'}; timing {', '.join(timings) or '-'}; changes are of medians, flagged "
            f"when p < {stats.ALPHA} (Mann-Whitney; counters and quiet icount timings: no overlap) and |change| "
            f"> the metric's threshold.")


def _plots(card: Card, b: Bundle, out_dir: Path, slug: str, nights: list[Night], keys) -> None:
    todo = [("rss", lambda p: plots.plot_rss(b, p), "host RSS over time, phases as bands"),
            ("fault-in", lambda p: plots.plot_fault_in(b, p), "fault-in time distribution"),
            ("zeroing", lambda p: plots.plot_zeroing(b, p), "zeroing per phase")]
    if len(nights) > 1:
        todo.append(("trends", lambda p: plots.plot_trends(b.scenario, trend_series(nights, b, keys), p),
                     f"headline trends over {len(nights)} nights"))
    for kind, plot, alt in todo:
        try:
            name = plot(out_dir / f"{slug}-{kind}.png")
        except (OSError, ValueError) as exc:
            card.notes.append(f"Plot {alt} failed: {exc}")
            continue
        if name:
            card.images.append((name, f"{b.scenario}: {alt}"))
        else:
            card.notes.append(f"No data for {alt}.")


# --------------------------------------------------------------------------------------------- render


def _html_cell(c: Cell) -> str:
    import html

    if isinstance(c, list):
        sep = "<br>"
        return sep.join(_html_cell(x) for x in c)
    if isinstance(c, Link):
        return f'<a href="{html.escape(c.href)}">{html.escape(c.text)}</a>'
    return html.escape(c)


def _md_cell(c: Cell) -> str:
    if isinstance(c, list):
        return "<br>".join(_md_cell(x) for x in c)
    if isinstance(c, Link):
        return f"[{c.text.replace('|', '/')}]({c.href.replace(' ', '%20')})"
    return c.replace("|", "\\|").replace("\n", " ")


def render(report: Report, template: str) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=template.endswith(".html.j2"),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["cell"] = lambda c: Markup(_html_cell(c))
    env.filters["md"] = _md_cell
    return env.get_template(template).render(r=report)


def build_report(results_dir: Path, out_dir: Path, extra: list[Entry] | None = None,
                 threshold_pct: float = stats.DEFAULT_THRESHOLD_PCT, history_dir: Path | None = None) -> Path:
    """Write out_dir/index.html, out_dir/report.md and the PNGs; returns the HTML path.

    `extra` lists runs that produced no bundle (e.g. a nightly entry whose scenario file is missing);
    `history_dir` holds one directory of results per earlier night (tonight's own, if there, is skipped).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise InputError(f"{results_dir}: no such results directory")
    history = load_history(history_dir, exclude=results_dir) if history_dir is not None else []
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MARKER).exists():
        for old in out_dir.glob("*.png"):
            old.unlink()
    (out_dir / MARKER).write_text("generated by harness report; skipped when scanning results\n")
    try:
        model = build_model(results_dir, out_dir, extra or [], threshold_pct, history)
    except OSError as exc:
        raise HarnessError(f"report: {exc}") from exc
    (out_dir / "report.md").write_text(render(model, "report.md.j2"))
    index = out_dir / "index.html"
    index.write_text(render(model, "report.html.j2"))
    return index
