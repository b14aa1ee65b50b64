"""The trust matrix: each design (kernel) under each host condition (one bundle per condition, named by its
scenario) -> pages handed out non-zero, pages whose zeroing it skipped, how many pages were checked, and
whether the design refused to trust the host (its boot log says so).

A design is its spec without flavours: `X%page-poison` is design X under the page_poison condition.
A design that skipped zeroing where no page was checked proves nothing: that cell is a failure of the
scenario (UNCHECKED), never "safe"."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.kernels.stacks import display_name
from harness.numbers import fmt_num
from harness.results.bundle import Bundle
from harness.results.compare import md_escape

SKIP_PREFIX = "vmstat.pgzero_skip_"  # the zeroing-stats counters of pages a design did not zero
# What balloon-opt-ins and pg-zeroed-reporting print when they turn an opt-in down (page poisoning), or take
# their trust back (the reporting device went away).
REFUSAL = re.compile(r"page poisoning active, not (trusting|freeing)|no longer trusting reported pages")


@dataclass(frozen=True)
class Cell:
    leaked: float  # pages memtouch found non-zero, over every repetition and phase
    skipped: float  # pages whose zeroing was skipped (zeroing-stats kernels), over every repetition and phase
    checks: int  # memtouch runs that checked their pages
    status: str  # the bundle's status
    refused: int = 0  # repetitions whose guest log says the design refused (or withdrew) its trust
    flavours: str = ""  # the flavours the design ran with under this condition ("%page-poison")

    @property
    def unchecked(self) -> bool:
        """Skipped zeroing in a run that completed without checking a page: the scenario proves nothing."""
        return self.skipped > 0 and self.checks == 0 and self.status == "complete"

    def text(self) -> str:
        if self.leaked:
            verdict = f"**LEAK** {fmt_num(self.leaked)}"
        elif self.status != "complete":  # never "safe": the run did not get to the end
            verdict = "**FAILED**" + (" before any check" if self.checks == 0 else "")
        elif self.unchecked:
            verdict = "**UNCHECKED**"
        elif self.checks == 0:
            verdict = "not checked"
        else:
            verdict = "safe"
        details = [f"skipped {fmt_num(self.skipped)}" if self.skipped else "never skipped", f"{self.checks} checks"]
        if self.refused:
            details.insert(0, "refused to trust")
        if self.flavours:
            details.append(f"as `{self.flavours}`")
        return f"{verdict} ({'; '.join(details)})" + ("" if self.status == "complete" or not self.leaked
                                                        else f" [{self.status}]")


def design(kernel: str) -> tuple[str, str]:
    """(the design, the flavours it ran with) of a kernel label: `base+X%page-poison` -> (`base+X`,
    `%page-poison`); a spec that is a named stack's is shown by that name (`seed002`)."""
    if kernel == "stock" or "/" in kernel:
        return kernel, ""
    name, sep, flavours = kernel.partition("%")
    return display_name(name), sep + flavours


def refusals(b: Bundle, kernel: str) -> int:
    """Repetitions of `kernel` whose guest kernel log (dmesg.txt or the serial console) has a refusal line."""
    count = 0
    for rep in sorted((b.path / b.kernel_slug(kernel)).glob("rep*")):
        logs = [rep / name for name in ("dmesg.txt", "serial.log") if (rep / name).exists()]
        if any(REFUSAL.search(log.read_text(errors="replace")) for log in logs):
            count += 1
    return count


def kernel_status(b: Bundle, kernel: str) -> str:
    """The bundle's status as far as `kernel` goes: a run of several kernels that failed on one of them (a check
    of its own failed, or it was the last to run before the run stopped) is complete for the others."""
    if b.status == "complete":
        return b.status
    if any(not r.ok and r.kernel == kernel for r in b.expectations):
        return b.status
    ran = [k for k in b.kernels if (b.path / b.kernel_slug(k)).is_dir()]
    failed_own_check = any(not r.ok for r in b.expectations)
    return b.status if not failed_own_check and ran and ran[-1] == kernel else "complete"


def cell(group: list[Bundle], row: str) -> Cell | None:
    """One design under one condition: every bundle of that condition (scenario) that ran the design, with
    whatever flavours."""
    leaks: list[float] = []
    skipped = 0.0
    statuses, flavours = [], []
    refused = 0
    for b in group:
        for kernel in b.kernels:
            name, flavour = design(kernel)
            samples = b.samples(kernel) if name == row else None
            if not samples:
                continue
            leaks += [v for (metric, _), vals in samples.items() if metric == "nonzero_pages" for v in vals]
            skipped += sum(v for (metric, _), vals in samples.items() if metric.startswith(SKIP_PREFIX) for v in vals)
            refused += refusals(b, kernel)
            statuses.append(kernel_status(b, kernel))
            flavours += [flavour] if flavour and flavour not in flavours else []
    if not statuses:
        return None
    status = next((s for s in statuses if s != "complete"), "complete")
    return Cell(sum(leaks), skipped, len(leaks), status, refused, ", ".join(flavours))


def render(bundles: list[Bundle]) -> tuple[str, bool]:
    """The Markdown matrix (a column per scenario, a row per kernel), and whether every cell is sound (no
    UNCHECKED cell)."""
    groups: dict[str, list[Bundle]] = {}
    kernels: list[str] = []
    for b in bundles:
        groups.setdefault(b.scenario, []).append(b)
        kernels += [d for d, _ in map(design, b.kernels) if d not in kernels]
    columns = list(groups)
    cells = {(k, c): x for c in columns for k in kernels if (x := cell(groups[c], k)) is not None}
    def joined(values) -> str:
        return ", ".join(sorted({str(v) for v in values}))

    lines = [f"From {len(bundles)} bundle(s) of {joined(b.started[:10] for b in bundles)}, accelerator "
             f"{joined(b.accel or '?' for b in bundles)}, timing {joined(b.timing for b in bundles)}, "
             f"{joined(b.manifest.reps for b in bundles)} repetition(s) per kernel (listed below the table). "
             "Cells, summed over repetitions and phases: pages handed out non-zero, to userspace or to the kernel's "
             "`__GFP_ZERO` scan (a LEAK), pages whose zeroing the design skipped (`vmstat.pgzero_skip_*`), checks "
             "that read pages back; *refused to trust*: its guest log says it turned its opt-in down.", "",
             "| design | " + " | ".join(f"`{md_escape(c)}`" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for k in kernels:
        row = [cells[(k, c)].text() if (k, c) in cells else "not run" for c in columns]
        lines.append(f"| `{md_escape(k)}` | " + " | ".join(row) + " |")
    lines += ["", "Bundles:", *(f"- `{b.path.name}` ({b.status}" + (f": {md_escape(b.error[:160])}" if b.error else "")
                                + ")" for b in bundles)]
    return "\n".join(lines) + "\n", not any(x.unchecked for x in cells.values())
