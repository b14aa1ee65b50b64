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


def cell(b: Bundle, kernel: str) -> Cell | None:
    samples = b.samples(kernel)
    if not samples:
        return None
    leaks = [v for (name, _), vals in samples.items() if name == "nonzero_pages" for v in vals]
    skipped = sum(v for (name, _), vals in samples.items() if name.startswith(SKIP_PREFIX) for v in vals)
    return Cell(sum(leaks), skipped, len(leaks), b.status)


def matrix(bundles: list[Bundle]) -> tuple[list[str], dict[tuple[str, int], Cell]]:
    kernels: list[str] = []
    for b in bundles:
        kernels += [k for k in b.kernels if k not in kernels]
    cells = {(k, i): c for i, b in enumerate(bundles) for k in kernels if (c := cell(b, k)) is not None}
    return kernels, cells


def render(bundles: list[Bundle]) -> tuple[str, bool]:
    """The Markdown matrix, and whether every cell is sound (no UNCHECKED cell)."""
    kernels, cells = matrix(bundles)
    lines = ["Host conditions (columns) from " + "; ".join(f"{i + 1}. {provenance(b).replace(', medians', '')}"
                                                        for i, b in enumerate(bundles))
             + ". Cells, summed over repetitions and phases: pages handed out non-zero (a LEAK), pages whose zeroing "
               "the design skipped (`vmstat.pgzero_skip_*`), memtouch runs that checked.", "",
             "| design | " + " | ".join(f"{i + 1}. `{md_escape(b.scenario)}`" for i, b in enumerate(bundles)) + " |",
             "|---|" + "---|" * len(bundles)]
    for k in kernels:
        row = [cells[(k, i)].text() if (k, i) in cells else "not run" for i in range(len(bundles))]
        lines.append(f"| `{md_escape(k)}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n", not any(c.unchecked for c in cells.values())
