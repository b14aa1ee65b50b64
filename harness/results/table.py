"""`harness table BUNDLE... --metric NAME@PHASE ...`: the Markdown table a README quotes, from bundles.

Rows are metrics (medians over the repetitions, and n), columns are kernels; the first line says where the
figures come from: scenario, date, accelerator, timing mode, repetitions and the bundle.  READMEs paste this
output instead of typing figures by hand.
"""

from __future__ import annotations

import statistics

from harness.errors import InputError
from harness.numbers import fmt_num
from harness.results.bundle import Bundle
from harness.results.compare import md_escape


def provenance(b: Bundle) -> str:
    return (f"`{b.scenario}`, {b.started[:10]}, {b.accel or '?'}, timing {b.timing}, {b.manifest.reps} repetition(s) "
            f"per kernel, medians; bundle `{b.path.name}` ({b.status})")


def parse_metric(text: str) -> tuple[str, str | None]:
    name, _, phase = text.partition("@")
    if not name:
        raise InputError(f"--metric {text!r}: expected NAME or NAME@PHASE")
    return name, phase or None


def medians(b: Bundle, kernel: str, name: str, phase: str | None) -> tuple[float | None, int]:
    values = [v for (n, p), vals in b.samples(kernel).items() if n == name and (phase is None or p == phase)
              for v in vals]
    return (statistics.median(values) if values else None), len(values)


def render(bundles: list[Bundle], metrics: list[tuple[str, str | None]], kernels: list[str] | None = None) -> str:
    """kernels: only these columns (in bundle order); default every kernel of every bundle."""
    columns = [(b, k) for b in bundles for k in b.kernels if not kernels or k in kernels]
    if not metrics:
        seen: list[tuple[str, str | None]] = []
        for b, k in columns:
            seen += [(n, p) for (n, p), vals in b.samples(k).items() if any(vals) and (n, p) not in seen]
        metrics = seen
    tag = {id(b): f" [{i}]" if len(bundles) > 1 else "" for i, b in enumerate(bundles, 1)}
    lines = [f"From{tag[id(b)]} {provenance(b)}." for b in bundles]
    if any(name.startswith("zeroing.") for name, _ in metrics):
        lines += [f"Zeroing counted on `{k.spec}`{tag[id(b)]} by {k.zeroing_summary()}." for b in bundles
                  for k in b.manifest.kernels if k.zeroing_summary() and (not kernels or k.spec in kernels)]
    lines.append("")
    lines.append("| metric | phase | " + " | ".join(f"`{md_escape(k)}`{tag[id(b)]}" for b, k in columns) + " |")
    lines.append("|---|---|" + "---:|" * len(columns))
    for name, phase in metrics:
        cells = []
        for b, k in columns:
            value, n = medians(b, k, name, phase)
            cells.append(fmt_num(value) if value is None or n <= 1 else f"{fmt_num(value)} (n={n})")
        lines.append(f"| {md_escape(name)} | {phase or 'all'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_by_bundle(bundles: list[Bundle], metrics: list[tuple[str, str | None]],
                     kernels: list[str] | None = None) -> str:
    """The same kernels in several configurations, one bundle each: a row per bundle (its scenario) and metric,
    a column per kernel, and each kernel's change of median against the first kernel in the row."""
    columns = kernels or [k for k in bundles[0].kernels if all(k in b.kernels for b in bundles)]
    if not metrics:
        metrics = list(dict.fromkeys((n, p) for b in bundles for k in columns
                                     for (n, p), vals in b.samples(k).items() if any(vals)))
    lines = [f"From [{i}] {provenance(b)}." for i, b in enumerate(bundles, 1)] + [""]
    lines.append("| configuration | metric | phase | " + " | ".join(f"`{md_escape(k)}`" for k in columns) + " |")
    lines.append("|---|---|---|" + "---:|" * len(columns))
    for i, b in enumerate(bundles, 1):
        for name, phase in metrics:
            base, _ = medians(b, columns[0], name, phase)
            cells = []
            for k in columns:
                value, n = medians(b, k, name, phase)
                cell = fmt_num(value) if value is None or n <= 1 else f"{fmt_num(value)} (n={n})"
                if k != columns[0] and value is not None and base:
                    cell += f" {(value - base) / abs(base) * 100:+.2f} %"
                cells.append(cell)
            lines.append(f"| `{md_escape(b.scenario)}` [{i}] | {md_escape(name)} | {phase or 'all'} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
