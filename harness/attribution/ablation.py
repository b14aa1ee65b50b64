"""Ablation: what each patch of a series changed, judged step by step from one bundle.

The bundle holds the kernel below the series (step 0) and every prefix of it (step k = the first k
patches).  Step k is compared with step k-1 by the same rules as `harness compare`; a metric "moved" at
step k when that comparison flags it (regression or improvement).  A change above the threshold that
too few repetitions cannot make significant is listed as such, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import InputError
from harness.kernels.inputs import load_series
from harness.kernels.spec import KernelSpec, series_ref
from harness.results import stats
from harness.results.bundle import Bundle
from harness.results.compare import Row, compare_kernels, fmt_num, md_escape
from harness.results.metrics import definition


@dataclass
class AblationStep:
    index: int
    kernel: str
    label: str  # the patch this step adds ("baseline" for step 0)
    moved: list[Row] = field(default_factory=list)  # flagged against the step before
    unsure: list[Row] = field(default_factory=list)  # above the threshold, but too few samples to tell


def ablation_steps(on: KernelSpec, series: list[str]) -> tuple[list[KernelSpec], list[str]]:
    """The kernel spec of every step, and what each step adds ("baseline" for the first)."""
    specs, labels = [on], [f"baseline ({on.text})"]
    stack = on
    for name in series:
        if series_ref(name)[1] is not None:
            raise InputError(f"--series {name!r}: name a whole series; ablation runs each of its prefixes")
        patches = load_series(name).patches
        for k, patch in enumerate(patches, 1):
            specs.append(stack.plus(name if k == len(patches) else f"{name}@{k}"))
            labels.append(f"{name} {k}/{len(patches)}: {patch.subject}")
        stack = stack.plus(name)
    return specs, labels


def ablate(bundle: Bundle, kernels: list[str], labels: list[str], threshold_pct: float) -> list[AblationStep]:
    steps = [AblationStep(0, kernels[0], labels[0])]
    for k in range(1, len(kernels)):
        cmp = compare_kernels(bundle, kernels[k - 1], bundle, kernels[k], threshold_pct)
        step = AblationStep(k, kernels[k], labels[k])
        for row in cmp.rows:
            j = row.judgement
            if j.flagged:
                step.moved.append(row)
            elif j.verdict == stats.TOO_FEW:
                step.unsure.append(row)
        steps.append(step)
    return steps


def describe(row: Row) -> str:
    j = row.judgement
    where = f"{j.name}@{row.phase}" if row.phase else j.name
    return f"{where} {fmt_num(j.a.median)} → {fmt_num(j.b.median)} ({stats.format_change(j.change_pct)})"


def to_markdown(steps: list[AblationStep], provenance: str) -> str:
    lines = [provenance, "",
             "| step | patch | what moved (against the step before; same rules as `harness compare`) |",
             "|---:|---|---|"]
    for s in steps[1:]:
        moved = [f"**{r.judgement.verdict}** {describe(r)}" for r in s.moved]
        moved += [f"{describe(r)}: too few samples to tell" for r in s.unsure]
        lines.append(f"| {s.index} | {md_escape(s.label)} | {md_escape('; '.join(moved)) or 'nothing'} |")
    return "\n".join(lines) + "\n"


def to_json(steps: list[AblationStep]) -> list[dict]:
    return [{"step": s.index, "kernel": s.kernel, "patch": s.label,
             "moved": [r.to_json() for r in s.moved], "unsure": [r.to_json() for r in s.unsure]} for s in steps]


def plot(steps: list[AblationStep], bundle: Bundle, path) -> bool:
    """Medians (and min-max) of every metric that moved at some step, across the steps; False if none did."""
    names = []
    for s in steps:
        for r in s.moved:
            if (r.judgement.name, r.phase) not in names:
                names.append((r.judgement.name, r.phase))
    if not names:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names[:6]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.2 * len(names)), squeeze=False)
    xs = [s.index for s in steps]
    for ax, (name, phase) in zip(axes[:, 0], names):
        series = [bundle.samples(s.kernel).get((name, phase), []) for s in steps]
        med = [sorted(v)[len(v) // 2] if v else float("nan") for v in series]
        lo = [m - min(v) if v else 0 for m, v in zip(med, series)]
        hi = [max(v) - m if v else 0 for m, v in zip(med, series)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3)
        ax.set_title(f"{name} @ {phase} ({definition(name).unit})", fontsize=9)
        ax.set_xticks(xs)
    axes[-1, 0].set_xlabel("step: patches applied")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
