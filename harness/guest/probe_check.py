"""Did a probe exercise the kernel path it claims?  Judged from its own fault count and the vmstat deltas.

faultscale must take exactly one fault per operation (a 4 KiB page written), in every worker, and no THP.

memtouch and memdirty must fault every 4 KiB page in with exactly one write fault, and in THP mode every
2 MiB range with one THP allocation (a fallback to 4 KiB pages is tolerated and reported).  A probe that
took a read fault first (the shared zero page, then copy-on-write), found its pages already mapped, or
never allocated a THP measured another path: its step is invalid, not a result.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGES_PER_THP = 512
MIB_PER_THP = 2


@dataclass(frozen=True)
class FaultCheck:
    invalid: str | None  # why the step is not a result, or None when the probe did what it claims
    note: str  # what was seen, for the log (fallbacks, fault counts)
    thp_fallbacks: int = 0  # 2 MiB ranges that fell back to 4 KiB pages (tolerated, reported)


def _slack(expected: int) -> int:
    """Faults outside the measured range that a probe may take (its stack, the rusage struct): 1 %."""
    return max(8, expected // 100)


def check_faults(out: dict, vmstat_delta: dict[str, int]) -> FaultCheck:
    """Judge one memtouch/memdirty result (its JSON line) against the step's vmstat deltas."""
    faults, pages, thp = out.get("faults"), out["pages"], out["thp"]
    if faults is None:
        return FaultCheck("the probe reported no fault count (an old guest image?)", "")
    if not thp:
        if faults < pages:
            return FaultCheck(f"{faults} page faults for {pages} pages: pages were mapped before the probe "
                              "touched them, so it did not fault them in", "")
        if faults > pages + _slack(pages):
            per_page = faults / pages
            why = " (a read fault on the zero page, then copy-on-write?)" if per_page >= 1.5 else ""
            return FaultCheck(f"{faults} page faults for {pages} pages: {per_page:.2f} per page, "
                              f"expected exactly one write fault each{why}", "")
        return FaultCheck(None, f"{faults} faults for {pages} pages")

    huge = out["mib"] // MIB_PER_THP
    tail = (out["mib"] % MIB_PER_THP) * (PAGES_PER_THP // MIB_PER_THP)  # a trailing 1 MiB faults as 4 KiB pages
    alloc = vmstat_delta.get("thp_fault_alloc", 0)
    fallback = vmstat_delta.get("thp_fault_fallback", 0)
    if huge and alloc == 0:
        return FaultCheck(f"THP mode allocated no transparent huge page (thp_fault_alloc 0, thp_fault_fallback "
                          f"{fallback}, {faults} faults): it measured 4 KiB faults", "")
    if alloc + fallback < huge:
        return FaultCheck(f"thp_fault_alloc {alloc} + thp_fault_fallback {fallback} < {huge} huge pages expected: "
                          "some 2 MiB ranges were not faulted in as huge pages", "")
    fallback = min(fallback, huge)
    expected = (huge - fallback) + fallback * PAGES_PER_THP + tail
    if not expected <= faults <= expected + _slack(expected):
        return FaultCheck(f"{faults} page faults, expected {expected} ({huge - fallback} THP faults, "
                          f"{fallback} huge pages fell back to 4 KiB, {tail} tail pages)", "")
    note = f"{alloc} THPs allocated for {huge} huge pages, {faults} faults"
    if fallback:
        note += f"; {fallback} of {huge} fell back to 4 KiB pages (thp_fault_fallback)"
    return FaultCheck(None, note, fallback)


def check_fault_scale(out: dict, vmstat_delta: dict[str, int]) -> FaultCheck:
    """Judge one faultscale result: each worker took one page fault per page it wrote (its operations), the
    system counted at least that many faults, and no fault made a transparent huge page."""
    worker_ops, worker_faults = out.get("worker_ops"), out.get("worker_faults")
    if not worker_ops or worker_faults is None or len(worker_ops) != len(worker_faults):
        return FaultCheck("the probe reported no per-worker operations and faults", "")
    for i, (ops, faults) in enumerate(zip(worker_ops, worker_faults, strict=True)):
        if ops <= 0:
            return FaultCheck(f"worker {i} faulted no page", "")
        if not ops <= faults <= ops + _slack(ops):
            per_op = faults / ops
            why = (" (pages were already mapped?)" if faults < ops
                   else " (a read fault on the zero page, then copy-on-write?)" if per_op >= 1.5 else "")
            return FaultCheck(f"worker {i}: {faults} page faults for {ops} pages written: {per_op:.3f} per page, "
                              f"expected exactly one fault each{why}", "")
    ops, faults = sum(worker_ops), sum(worker_faults)
    pgfault = vmstat_delta.get("pgfault")
    if pgfault is not None and pgfault < ops:
        return FaultCheck(f"/proc/vmstat pgfault rose by {pgfault}, fewer than the {ops} pages the workers "
                          "faulted", "")
    thp = vmstat_delta.get("thp_fault_alloc", 0)
    if thp:
        return FaultCheck(f"{thp} transparent huge pages were allocated: the probe measures 4 KiB faults", "")
    return FaultCheck(None, f"{faults} faults for {ops} pages in {len(worker_ops)} worker(s)"
                            + (f", pgfault +{pgfault}" if pgfault is not None else ""))
