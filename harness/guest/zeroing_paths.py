"""Where a step's page zeroing happened, by path: /proc/zeroing_sources read before and after the step.

The kernel series `zeroing-sources` (instrumentation only) counts every allocation that asks for zeroed memory
by outcome (zeroed or skipped), class (movable: user pages; kernel: page tables, slab, ...), how the block left
the free lists (a pcp refill, rmqueue_buddy(), another path, or recycled through a pcp list without going back
to the buddy allocator), the order of the free block it was cut from, and that block's status (reported; a
remnant split off a reported block that lost the mark; plain).  See kernel_patches/zeroing-sources/README.md.

`breakdown()` folds those counters into a fixed set of metrics that partition the zeroed pages, so a reader
sees why skipping was not complete; `zeroing_paths.zeroed` equals vmstat's pgzero_alloc over the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.guest.probes import parse_kv
from harness.guest.ssh import Guest

SERIES = "zeroing-sources"
SOURCES = "/proc/zeroing_sources"
REPORTING_ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"
DEFAULT_REPORTING_ORDER = 9  # pageblock_order on x86-64: the kernel's default when the parameter is unset
MAX_ORDER = 10  # MAX_PAGE_ORDER on x86-64
PREFIX = "zeroing_paths"

OUTCOMES = ("zeroed", "skipped")
CLASSES = ("movable", "kernel")
VIAS = ("pcp_recycled", "pcp_refill", "buddy", "other")
STATUSES = ("plain", "remnant", "reported")

# The parts of the zeroed (and of the skipped) pages, in the order a table shows them; each base page is in
# exactly one part.  "user" is a movable allocation (here: anonymous faults), "kernel" everything else.
PARTS = {
    "kernel": "kernel allocations (page tables, slab, ...), from any source",
    "user.pcp_recycled": "user pages freed to a pcp list and allocated again without passing the buddy lists",
    "user.reported": "user pages cut from a block that was still marked reported when it was taken",
    "user.remnant": "user pages cut from a block split off a reported block, which lost the mark",
    "user.unreported_low": "user pages cut from a never-reported block below page_reporting_order",
    "user.unreported_high": "user pages cut from a never-reported block of page_reporting_order or above",
}
# How the user pages taken from the buddy lists got there (a second view of the same pages).
VIA_PARTS = ("pcp_refill", "buddy", "other")


@dataclass(frozen=True)
class Key:
    outcome: str
    cls: str
    via: str
    order: int | None  # of the free block the page was cut from; None when recycled through a pcp list
    status: str


@dataclass(frozen=True)
class Snapshot:
    counts: dict[Key, int]
    reporting_order: int
    vmstat: dict[str, int]  # read by the same command, so pgzero_alloc covers the same window
    pcp_pages: int  # pages on the per-CPU lists (never on the buddy lists, so never reported)
    movable_free: dict[int, int]  # order -> free blocks on the movable buddy lists


def free_pages_below(snapshot: Snapshot, order: int) -> int:
    """Base pages in free movable blocks below `order`: too small to be reported at page_reporting_order."""
    return sum(n << o for o, n in snapshot.movable_free.items() if o < order)


def parse_pcp_pages(zoneinfo: str) -> int:
    """The sum of the per-CPU lists' `count:` lines of /proc/zoneinfo."""
    return sum(int(line.split()[1]) for line in zoneinfo.splitlines()
               if line.split()[:1] == ["count:"] and line.split()[1:2] and line.split()[1].isdigit())


def parse_movable_free(pagetypeinfo: str) -> dict[int, int]:
    """Free blocks per order on the Movable lists of every zone, from /proc/pagetypeinfo."""
    out: dict[int, int] = {}
    for line in pagetypeinfo.splitlines():
        words = line.replace(",", " ").split()
        if len(words) > 6 and words[0] == "Node" and words[4:6] == ["type", "Movable"]:
            for order, n in enumerate(words[6:]):
                if n.isdigit():
                    out[order] = out.get(order, 0) + int(n)
    return out


def parse(text: str) -> dict[Key, int]:
    """`outcome class via order status pages` lines (order "-": none) into counters."""
    counts: dict[Key, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if (len(fields) != 6 or fields[0] not in OUTCOMES or fields[1] not in CLASSES or fields[2] not in VIAS
                or fields[4] not in STATUSES or not fields[5].isdigit()
                or not (fields[3] == "-" or fields[3].isdigit())):
            raise HarnessError(f"{SOURCES} line {n} is not 'outcome class via order status pages': {line!r}")
        key = Key(fields[0], fields[1], fields[2], None if fields[3] == "-" else int(fields[3]), fields[4])
        counts[key] = counts.get(key, 0) + int(fields[5])
    return counts


def read(guest: Guest) -> Snapshot:
    res = guest.run(f"cat /proc/vmstat && echo --- && cat {SOURCES} && echo --- && "
                    f"(cat {REPORTING_ORDER} 2>/dev/null || true) && echo --- && cat /proc/zoneinfo && echo --- && "
                    f"cat /proc/pagetypeinfo", check=False)
    if res.rc != 0:
        raise HarnessError(f"zeroing_paths: the guest kernel has no {SOURCES}: boot a kernel with the {SERIES} "
                           f"series (right after zeroing-stats)")
    vmstat, sources, order, zoneinfo, pagetypeinfo = (res.stdout.split("---\n") + [""] * 4)[:5]
    order = order.strip()
    # -1 (printed unsigned) until a reporting device registers and picks its order
    known = order.isdigit() and int(order) <= MAX_ORDER
    return Snapshot(parse(sources), int(order) if known else DEFAULT_REPORTING_ORDER, parse_kv(vmstat),
                    parse_pcp_pages(zoneinfo), parse_movable_free(pagetypeinfo))


def delta(before: Snapshot, after: Snapshot) -> dict[Key, int]:
    keys = set(before.counts) | set(after.counts)
    out = {k: after.counts.get(k, 0) - before.counts.get(k, 0) for k in keys}
    return {k: v for k, v in out.items() if v}


def part_of(key: Key, reporting_order: int) -> str:
    if key.cls == "kernel":
        return "kernel"
    if key.via == "pcp_recycled":
        return "user.pcp_recycled"
    if key.status != "plain":
        return f"user.{key.status}"
    low = key.order is not None and key.order < reporting_order
    return "user.unreported_low" if low else "user.unreported_high"


def breakdown(counts: dict[Key, int], reporting_order: int) -> dict[str, int]:
    """Metric name -> pages: per outcome its total, its parts, and for user pages from the buddy lists the
    path they took.  Every name is present (zero included), so tables have a value in every column."""
    out: dict[str, int] = {}
    for outcome in OUTCOMES:
        out[f"{PREFIX}.{outcome}"] = 0
        out.update({f"{PREFIX}.{outcome}.{part}": 0 for part in PARTS})
        out.update({f"{PREFIX}.{outcome}.user.via_{via}": 0 for via in VIA_PARTS})
    for key, pages in counts.items():
        out[f"{PREFIX}.{key.outcome}"] += pages
        out[f"{PREFIX}.{key.outcome}.{part_of(key, reporting_order)}"] += pages
        if key.cls == "movable" and key.via in VIA_PARTS:
            out[f"{PREFIX}.{key.outcome}.user.via_{key.via}"] += pages
    return out


def rows(counts: dict[Key, int]) -> list[dict]:
    """The counters in full, for steps.json (largest first)."""
    return [{"outcome": k.outcome, "class": k.cls, "via": k.via, "order": k.order, "status": k.status, "pages": v}
            for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
