"""`harness report RESULTS_DIR --out DIR`: a static HTML report (index.html) and the same as report.md.

* An index of every run directory in RESULTS_DIR (hidden ``.tmp-*`` ones skipped): status, scenario,
  kernels, accelerator, start time; failed runs with their error and links to their serial.log and
  transcript.log; directories that are not readable bundles with the reason.
* Per scenario (its latest bundle with metrics, whatever its status): the median of each
  metric per kernel side by side, with the changes flagged against the first kernel (same rules as
  `harness compare`), and PNG plots: host RSS over time, fault-in time distribution, zeroing counters.
"""

from __future__ import annotations

import csv
import fnmatch
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.results import stats
from harness.results.bundle import Bundle, load_bundle
from harness.results.compare import KernelComparison, fmt_num, leak_findings, run_compare
from harness.results.metrics import definition

MARKER = ".harness-report"  # marks an output directory so a later scan of RESULTS_DIR skips it
LOG_NAMES = ("serial.log", "transcript.log")
ZEROING_METRICS = ("zeroing.*", "vmstat.pgzero_*", "kprobe.*")  # see manifest kernels[].zeroing


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


def scan(results_dir: Path) -> list[Entry]:
    """Every run directory in results_dir, readable or not, oldest first (names start with a timestamp)."""
    entries = []
    for d in sorted(results_dir.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or (d / MARKER).exists():
            continue
        e = Entry(d.name, d)
        try:
            e.bundle = load_bundle(d)
        except (InputError, OSError) as exc:
            e.problem = str(exc).removeprefix(f"{d}/").removeprefix(f"{d}: ")
        e.logs = sorted(p for name in LOG_NAMES for p in d.glob(f"**/{name}"))
        entries.append(e)
    return entries


def pick_per_scenario(entries: list[Entry]) -> dict[str, Bundle]:
    """Scenario name -> its latest bundle that has metrics, failed or not (its status is shown).

    A failed run usually still has its metrics (e.g. an expectation broke); showing an older complete
    run instead would hide tonight's result.
    """
    chosen: dict[str, Bundle] = {}
    for e in entries:
        b = e.bundle
        if b is None or not b.metrics:
            continue
        cur = chosen.get(b.scenario)
        if cur is None or (b.started, b.path.name) >= (cur.started, cur.path.name):
            chosen[b.scenario] = b
    return dict(sorted(chosen.items()))


# --------------------------------------------------------------------- document blocks (HTML and MD)


@dataclass
class Link:
    text: str
    href: str


Cell = str | Link | list  # a list holds several str/Link pieces


def rel(target: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()


def index_table(entries: list[Entry], out_dir: Path) -> tuple[list[str], list[list[Cell]]]:
    head = ["run", "status", "scenario", "kernels", "accel", "started", "error", "logs"]
    rows = []
    for e in entries:
        b = e.bundle
        logs: list = []
        if e.status != "complete":
            logs = [Link(f"{p.parent.relative_to(e.path).as_posix()}/{p.name}", rel(p, out_dir)) for p in e.logs]
        rows.append([
            Link(e.name, rel(e.path, out_dir)) if e.path else e.name,
            e.status,
            b.scenario if b else "-",
            ", ".join(b.kernels) if b else "-",
            (b.accel or "-") if b else "-",
            (b.started or "-") if b else "-",
            (b.error or "") if b else (e.problem or ""),
            logs or ("-" if e.status != "complete" else ""),
        ])
    return head, rows


def scenario_table(b: Bundle, comparisons: list[KernelComparison]) -> tuple[list[str], list[list[Cell]]]:
    kernels = b.kernels
    samples = {k: b.samples(k) for k in kernels}
    keys: list[tuple[str, str]] = []
    for k in kernels:
        keys += [key for key in samples[k] if key not in keys]
    judged = {(c.other, r.judgement.name, r.phase): r.judgement for c in comparisons for r in c.rows}
    head = ["metric", "phase", "unit"] + [k + (" (baseline)" if i == 0 else "") for i, k in enumerate(kernels)]
    rows = []
    for name, phase in keys:
        row: list[Cell] = [name, phase or "-", definition(name).unit]
        for i, k in enumerate(kernels):
            vals = samples[k].get((name, phase))
            if not vals:
                row.append("-")
                continue
            cell = f"{fmt_num(stats.summarize(vals).median)} (n={len(vals)})"
            j = judged.get((k, name, phase))
            if i > 0 and j is not None:
                cell += f" {stats.format_change(j.change_pct)}"
                if j.flagged:
                    cell += f" {j.verdict.upper()}"
            row.append(cell)
        rows.append(row)
    return head, rows


def flagged_lines(comparisons: list[KernelComparison]) -> list[str]:
    out = []
    for c in comparisons:
        for r in c.rows:
            j = r.judgement
            if j.flagged:
                p = "" if j.p is None else f", p={j.p:.3g}"
                out.append(f"{j.verdict}: {c.other} vs {c.base}: {j.name} @ {r.phase or '-'} "
                           f"{fmt_num(j.a.median)} -> {fmt_num(j.b.median)} {definition(j.name).unit} "
                           f"({stats.format_change(j.change_pct)}{p})")
    return out


# ---------------------------------------------------------------------------------------------- plots


def _figure(width=8.0, height=4.0):
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, Agg canvas on savefig
    )

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def read_rss(path: Path) -> tuple[list[float], list[float]]:
    t, rss = [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                t.append(float(row["t_s"]))
                rss.append(float(row["rss_kib"]) / 1024.0)
            except (KeyError, TypeError, ValueError):
                continue
    return t, rss


def plot_rss(b: Bundle, out: Path) -> str | None:
    fig, ax = _figure()
    colors: dict = {}
    for i, k in enumerate(b.kernels):
        for csv_path in sorted((b.path / b.kernel_slug(k)).glob("rep*/rss.csv")):
            t, rss = read_rss(csv_path)
            if t:
                label = k if k not in colors else None
                line, = ax.plot(t, rss, color=colors.get(k, f"C{i}"), linewidth=1, label=label)
                colors[k] = line.get_color()
    if not colors:
        return None
    ax.set(xlabel="time (s)", ylabel="QEMU RSS (MiB)", title=f"{b.scenario}: host RSS")
    ax.legend()
    fig.savefig(out, dpi=100)
    return out.name


def plot_fault_in(b: Bundle, out: Path) -> str | None:
    groups = []
    for k in b.kernels:
        per_phase = {p: v for (n, p), v in b.samples(k).items() if n == "fault_in_ms"}
        for phase, vals in per_phase.items():
            groups.append((k if len(per_phase) == 1 else f"{k}\n{phase}", vals))
    if not groups:
        return None
    import numpy as np

    fig, ax = _figure(max(5.0, 1.5 * len(groups)), 4.0)
    ax.boxplot([v for _, v in groups], showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), [g for g, _ in groups])
    rng = np.random.default_rng(0)
    for i, (_, vals) in enumerate(groups, start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, len(vals)), vals, "o", alpha=0.6, markersize=4)
    ax.set(ylabel="fault_in_ms (ms)", title=f"{b.scenario}: fault-in time per kernel")
    fig.savefig(out, dpi=100)
    return out.name


def plot_zeroing(b: Bundle, out: Path) -> str | None:
    kernels = b.kernels
    cats: list[tuple[str, str]] = []
    med: dict[tuple[str, str, str], float] = {}
    for k in kernels:
        for (name, phase), vals in b.samples(k).items():
            if any(fnmatch.fnmatchcase(name, pat) for pat in ZEROING_METRICS):
                if (name, phase) not in cats:
                    cats.append((name, phase))
                med[(k, name, phase)] = stats.summarize(vals).median
    if not cats:
        return None
    # Counters that stayed 0 on every kernel would only crowd out the ones that moved.
    cats = [c for c in cats if any(med.get((k, *c)) for k in kernels)] or cats
    fig, ax = _figure(min(16.0, max(6.0, 0.9 * len(cats) * max(1, len(kernels)) ** 0.5 + 2)), 4.5)
    width = 0.8 / len(kernels)
    for i, k in enumerate(kernels):
        xs = [c + (i - (len(kernels) - 1) / 2) * width for c in range(len(cats))]
        ax.bar(xs, [med.get((k, n, p), 0.0) for n, p in cats], width, label=k)
    ax.set_xticks(range(len(cats)), [f"{n.removeprefix('vmstat.')}\n{p or '-'}" for n, p in cats],
                  rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, max([1.0, *med.values()]) * 1.1)
    ax.set(ylabel="pages or calls (median over reps)",
           title=f"{b.scenario}: zeroing counters per phase (those that moved)")
    ax.legend()
    fig.savefig(out, dpi=100)
    return out.name


PLOTS = (("rss", plot_rss, "host RSS over time"), ("fault-in", plot_fault_in, "fault-in time"),
         ("zeroing", plot_zeroing, "zeroing counters"))


# --------------------------------------------------------------------------------------------- render


def build_blocks(results_dir: Path, out_dir: Path, extra: list[Entry], threshold_pct: float) -> list[tuple]:
    entries = scan(results_dir) + extra
    blocks: list[tuple] = [("h1", f"balloon testbed report: {results_dir}")]
    n_failed = sum(e.status != "complete" for e in entries)
    blocks.append(("p", f"{len(entries)} run(s), {n_failed} not complete."))
    latest = pick_per_scenario(entries)
    leaks = leak_findings(list(latest.values()))
    if leaks:  # a page handed out non-zero is the most important finding: before anything else
        blocks += [("h2", f"LEAKS: {len(leaks)} kernel(s) handed userspace pages that were not zero"),
                   ("list", leaks)]
    blocks += [("h2", "Runs"), ("table", *index_table(entries, out_dir))]
    used: set[str] = set()
    for scenario, b in latest.items():
        blocks.append(("h2", f"Scenario {scenario}"))
        status = b.status if b.status == "complete" else f"{b.status.upper()}: {b.error or 'no error recorded'}"
        blocks.append(("p", ["From bundle ", Link(b.path.name, rel(b.path, out_dir)),
                             f" (status {status}; accel {b.accel or '-'}, started {b.started or '-'}). "
                             f"Medians per kernel; changes are of medians against the first kernel, "
                             f"flagged when p < {stats.ALPHA} and |change| > {threshold_pct:g}%."]))
        zeroing = [f"{k.spec}: {k.zeroing_summary()}" for k in b.manifest.kernels if k.zeroing_summary()]
        if zeroing:
            blocks += [("p", "Zeroing counted by (manifest kernels[].zeroing):"), ("list", zeroing)]
        comparisons = run_compare(b, None, threshold_pct) if len(b.kernels) > 1 else []
        blocks.append(("table", *scenario_table(b, comparisons)))
        flags = flagged_lines(comparisons)
        blocks.append(("list", flags) if flags else ("p", "No flagged changes."))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", scenario)
        while slug in used:
            slug += "_"
        used.add(slug)
        for kind, plot, alt in PLOTS:
            try:
                name = plot(b, out_dir / f"{slug}-{kind}.png")
            except (OSError, ValueError) as exc:
                blocks.append(("p", f"Plot {alt} failed: {exc}"))
                continue
            blocks.append(("img", name, f"{scenario}: {alt}") if name else ("p", f"No data for {alt}."))
    return blocks


def _html_cell(c: Cell) -> str:
    if isinstance(c, list):
        return "<br>".join(_html_cell(x) for x in c) if all(isinstance(x, Link) for x in c) else \
            "".join(_html_cell(x) for x in c)
    if isinstance(c, Link):
        return f'<a href="{html.escape(c.href)}">{html.escape(c.text)}</a>'
    return html.escape(c)


def _md_cell(c: Cell) -> str:
    if isinstance(c, list):
        sep = "<br>" if all(isinstance(x, Link) for x in c) else ""
        return sep.join(_md_cell(x) for x in c)
    if isinstance(c, Link):
        return f"[{c.text.replace('|', '/')}]({c.href.replace(' ', '%20')})"
    return c.replace("|", "\\|").replace("\n", " ")


def to_html(blocks: list[tuple]) -> str:
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8"><title>balloon testbed report</title>',
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%;text-align:left}"
             "th{background:#eee}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_html_cell(rest[0])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_html_cell(x)}</li>" for x in rest[0]) + "</ul>")
        elif kind == "img":
            parts.append(f'<p><img src="{html.escape(rest[0])}" alt="{html.escape(rest[1])}"></p>')
        elif kind == "table":
            head, rows = rest
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def to_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for kind, *rest in blocks:
        if kind == "h1":
            lines += [f"# {rest[0]}", ""]
        elif kind == "h2":
            lines += [f"## {rest[0]}", ""]
        elif kind == "p":
            lines += [_md_cell(rest[0]), ""]
        elif kind == "list":
            lines += [f"- {_md_cell(x)}" for x in rest[0]] + [""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", ""]
        elif kind == "table":
            head, rows = rest
            lines.append("| " + " | ".join(_md_cell(h) for h in head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def build_report(results_dir: Path, out_dir: Path, extra: list[Entry] | None = None,
                 threshold_pct: float = stats.DEFAULT_THRESHOLD_PCT) -> Path:
    """Write out_dir/index.html, out_dir/report.md and the PNGs; returns the HTML path.

    `extra` lists runs that produced no bundle (e.g. a nightly entry whose scenario file is missing).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise InputError(f"{results_dir}: no such results directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MARKER).exists():
        for old in out_dir.glob("*.png"):
            old.unlink()
    (out_dir / MARKER).write_text("generated by harness report; skipped when scanning results\n")
    try:
        blocks = build_blocks(results_dir, out_dir, extra or [], threshold_pct)
    except OSError as exc:
        raise HarnessError(f"report: {exc}") from exc
    (out_dir / "report.md").write_text(to_markdown(blocks))
    index = out_dir / "index.html"
    index.write_text(to_html(blocks))
    return index
