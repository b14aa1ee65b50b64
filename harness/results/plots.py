"""The report's PNG plots (matplotlib, no pyplot: no global state, an Agg canvas on savefig).

Each function writes one file and returns its name, or None when the bundle has nothing to plot.
"""

from __future__ import annotations

import csv
import fnmatch
import json
from pathlib import Path

from harness.kernels.stacks import display_name
from harness.numbers import fmt_num
from harness.results import stats
from harness.results.bundle import Bundle
from harness.results.history import TrendPoint

ZEROING_METRICS = ("zeroing.*", "vmstat.pgzero_*", "kprobe.*")  # see manifest kernels[].zeroing
DPI = 100


def _figure(width=8.0, height=4.0, rows=1, sharex=False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


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


def read_phases(steps_json: Path) -> list[tuple[str, float, float]]:
    """(phase, start, end) of each step on rss.csv's clock; [] for bundles written before steps kept times."""
    try:
        steps = json.loads(steps_json.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for s in steps if isinstance(steps, list) else []:
        try:
            out.append((str(s["phase"]), float(s["t_start_s"]), float(s["t_end_s"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def plot_rss(b: Bundle, out: Path) -> str | None:
    """Host RSS over time, one panel per kernel (every repetition a line), the first repetition's phases as
    labelled bands."""
    runs = {k: sorted((b.path / b.kernel_slug(k)).glob("rep*/rss.csv")) for k in b.kernels}
    runs = {k: paths for k, paths in runs.items() if paths}
    if not runs:
        return None
    fig, axes = _figure(9.0, 1.0 + 1.6 * len(runs), rows=len(runs), sharex=True)
    drawn = False
    for i, (ax, (kernel, paths)) in enumerate(zip(axes, runs.items())):
        for j, path in enumerate(paths):
            t, rss = read_rss(path)
            if t:
                ax.plot(t, rss, color=f"C{i}", linewidth=1, alpha=1.0 if j == 0 else 0.45)
                drawn = True
        for k, (phase, start, end) in enumerate(read_phases(paths[0].with_name("steps.json"))):
            ax.axvspan(start, max(end, start + 0.05), color="0.85" if k % 2 else "0.92", zorder=0)
            ax.text((start + end) / 2, 1.01 + 0.09 * (k % 2), phase, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, clip_on=False)  # staggered: short phases sit close
        ax.set_ylabel("MiB")
        ax.set_title(f"{kernel} ({len(paths)} rep(s))", fontsize=9, loc="left", pad=18)
    if not drawn:
        return None
    axes[-1].set_xlabel("time since QEMU started (s)")
    fig.suptitle(f"{b.scenario}: QEMU host RSS, phases of the first repetition shaded")
    fig.savefig(out, dpi=DPI)
    return out.name


def plot_fault_in(b: Bundle, out: Path) -> str | None:
    groups = []
    for k in b.kernels:
        per_phase = {p: v for (n, p), v in b.samples(k).items() if n == "fault_in_ms"}
        for phase, vals in per_phase.items():
            groups.append((display_name(k) if len(per_phase) == 1 else f"{display_name(k)}\n{phase}", vals))
    if not groups:
        return None
    import numpy as np

    fig, (ax,) = _figure(max(5.0, 1.6 * len(groups)), 4.0)
    ax.boxplot([v for _, v in groups], showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), [_wrap(g) for g, _ in groups], fontsize=7)
    rng = np.random.default_rng(0)
    for i, (_, vals) in enumerate(groups, start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, len(vals)), vals, "o", alpha=0.6, markersize=4)
    ax.set(ylabel="fault_in_ms (ms)", title=f"{b.scenario}: fault-in time per kernel and phase")
    fig.savefig(out, dpi=DPI)
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
    fig, (ax,) = _figure(min(16.0, max(6.0, 0.9 * len(cats) * max(1, len(kernels)) ** 0.5 + 2)), 4.5)
    width = 0.8 / len(kernels)
    for i, k in enumerate(kernels):
        xs = [c + (i - (len(kernels) - 1) / 2) * width for c in range(len(cats))]
        ax.bar(xs, [med.get((k, n, p), 0.0) for n, p in cats], width, label=_wrap(display_name(k)))
    ax.set_xticks(range(len(cats)), [f"{n.removeprefix('vmstat.')}\n{p or '-'}" for n, p in cats],
                  rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, max([1.0, *med.values()]) * 1.1)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:,.0f}")
    ax.set(ylabel="pages or calls (median over reps)", title=f"{b.scenario}: zeroing per phase (counters that moved)")
    ax.legend(fontsize=7)
    fig.savefig(out, dpi=DPI)
    return out.name


def plot_trends(scenario: str, series: dict[tuple[str, str], dict[str, list[TrendPoint]]], out: Path) -> str | None:
    """series: (metric, phase) -> kernel -> its median night by night; the last night is tonight."""
    panels = [(key, per) for key, per in series.items()
              if any(p.median is not None for pts in per.values() for p in pts)]
    if not panels:
        return None
    fig, axes = _figure(9.0, 1.2 + 1.6 * len(panels), rows=len(panels), sharex=True)
    for ax, ((name, phase), per) in zip(axes, panels):
        for i, (kernel, points) in enumerate(per.items()):
            xs = [j for j, p in enumerate(points) if p.median is not None]
            ax.plot(xs, [points[j].median for j in xs], "o-", color=f"C{i}", markersize=3, linewidth=1,
                    label=_wrap(display_name(kernel)))
        ax.set_title(f"{name} @ {phase or '-'}", fontsize=9, loc="left")
        ax.yaxis.set_major_formatter(lambda v, _pos: fmt_num(round(v, 3)))
    nights = [p.night for p in next(iter(panels[0][1].values()))]
    axes[-1].set_xticks(range(len(nights)), nights, rotation=45, ha="right", fontsize=7)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0].axvline(len(nights) - 1, color="0.6", linestyle=":")
    fig.suptitle(f"{scenario}: headline medians per night (last = tonight)")
    fig.savefig(out, dpi=DPI)
    return out.name


def _wrap(label: str, width: int = 28) -> str:
    """Long kernel specs (base+a+b+c) broken at '+' so tick labels stay readable."""
    if len(label) <= width:
        return label
    lines, cur = [], ""
    for part in label.split("+"):
        piece = part if not cur else "+" + part
        if cur and len(cur) + len(piece) > width:
            lines.append(cur)
            cur = "+" + part
        else:
            cur += piece
    return "\n".join([*lines, cur])
