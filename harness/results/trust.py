"""The trust matrix: each design (kernel) under each host condition (one bundle per condition, named by its
scenario) -> pages handed out non-zero, pages whose zeroing it skipped, and how many pages were checked.

A design that skipped zeroing where no page was checked proves nothing: that cell is a failure of the
scenario (UNCHECKED), never "safe"."""

from __future__ import annotations

from dataclasses import dataclass

from harness.numbers import fmt_num
from harness.results.bundle import Bundle
from harness.results.compare import md_escape
from harness.results.table import provenance

SKIP_PREFIX = "vmstat.pgzero_skip_"  # the zeroing-stats counters of pages a design did not zero


@dataclass(frozen=True)
class Cell:
    leaked: float  # pages memtouch found non-zero, over every repetition and phase
    skipped: float  # pages whose zeroing was skipped (zeroing-stats kernels), over every repetition and phase
    checks: int  # memtouch runs that checked their pages
    status: str  # the bundle's status

    @property
    def unchecked(self) -> bool:
        return self.skipped > 0 and self.checks == 0

    def text(self) -> str:
        if self.leaked:
            verdict = f"**LEAK** {fmt_num(self.leaked)}"
        elif self.unchecked:
            verdict = "**UNCHECKED**"
        elif self.checks == 0:
            verdict = "not checked"
        else:
            verdict = "safe"
        detail = f"skipped {fmt_num(self.skipped)}" if self.skipped else "never skipped"
        return f"{verdict} ({detail}; {self.checks} checks)" + ("" if self.status == "complete" else f" [{self.status}]")


def cell(group: list[Bundle], kernel: str) -> Cell | None:
    """One design under one condition: every bundle of that condition (scenario) that ran the design."""
    leaks: list[float] = []
    skipped = 0.0
    statuses = []
    for b in group:
        samples = b.samples(kernel)
        if not samples:
            continue
        leaks += [v for (name, _), vals in samples.items() if name == "nonzero_pages" for v in vals]
        skipped += sum(v for (name, _), vals in samples.items() if name.startswith(SKIP_PREFIX) for v in vals)
        statuses.append(b.status)
    if not statuses:
        return None
    status = next((s for s in statuses if s != "complete"), "complete")
    return Cell(sum(leaks), skipped, len(leaks), status)


def render(bundles: list[Bundle]) -> tuple[str, bool]:
    """The Markdown matrix (a column per scenario, a row per kernel), and whether every cell is sound (no
    UNCHECKED cell)."""
    groups: dict[str, list[Bundle]] = {}
    kernels: list[str] = []
    for b in bundles:
        groups.setdefault(b.scenario, []).append(b)
        kernels += [k for k in b.kernels if k not in kernels]
    columns = list(groups)
    cells = {(k, c): x for c in columns for k in kernels if (x := cell(groups[c], k)) is not None}
    lines = ["From " + "; ".join(provenance(b).replace(", medians", "") for b in bundles)
             + ". Cells, summed over repetitions and phases: pages handed out non-zero (a LEAK), pages whose zeroing "
               "the design skipped (`vmstat.pgzero_skip_*`), memtouch runs that checked.", "",
             "| design | " + " | ".join(f"`{md_escape(c)}`" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for k in kernels:
        row = [cells[(k, c)].text() if (k, c) in cells else "not run" for c in columns]
        lines.append(f"| `{md_escape(k)}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n", not any(x.unchecked for x in cells.values())
