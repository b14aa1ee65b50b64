"""What the harness measures inside the guest: memtouch/memdirty/faultscale, /proc snapshots (zeroing counts:
`zeroing`)."""

from __future__ import annotations

import json
import re
import uuid

from harness.errors import HarnessError
from harness.guest.ssh import Guest

# vmstat counters whose per-step deltas become metrics (prefix match for the pgzero_ family).
VMSTAT_TRACKED = (
    "pgzero_",
    "page_reporting_pages",
    "balloon_inflate",
    "balloon_deflate",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "pgfault",
    "pgfree",
    "pgalloc_normal",
    "pgalloc_dma32",
)


def parse_kv(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


def vmstat(guest: Guest) -> dict[str, int]:
    return parse_kv(guest.run("cat /proc/vmstat").stdout)


def is_tracked(name: str) -> bool:
    """Whether a step records the delta of this /proc/vmstat counter (as metric vmstat.NAME)."""
    return any(name == t or (t.endswith("_") and name.startswith(t)) for t in VMSTAT_TRACKED)


def tracked_deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after if is_tracked(name)}


def guest_clock_and_reported(guest: Guest, sleep_s: float) -> tuple[float, int | None]:
    """Sleep `sleep_s` in the guest, then read its clock (/proc/uptime, seconds) and the pages free page
    reporting has reported so far (page_reporting_pages, None on kernels without that counter)."""
    out = guest.run(f"sleep {sleep_s}; cat /proc/uptime; grep '^page_reporting_pages ' /proc/vmstat || true").stdout
    lines = out.split("\n")
    reported = parse_kv(out).get("page_reporting_pages")
    return float(lines[0].split()[0]), reported


CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"


def clocksource(guest: Guest) -> str | None:
    """The guest's clocksource (a KVM run without kvm-clock times itself with another clock)."""
    res = guest.run(f"cat {CLOCKSOURCE}", check=False)
    if res.rc != 0:
        return None
    return res.stdout.strip() or None


def memtouch(guest: Guest, size_mib: int, thp: bool, fault: str, timeout: float) -> dict:
    """fault: "populate" (MADV_POPULATE_WRITE) or "store" (a user-space store per page)."""
    cmd = f"memtouch {size_mib}" + (" --thp" if thp else "") + (" --store" if fault == "store" else "")
    return json.loads(guest.run(cmd, timeout=timeout).stdout.strip().splitlines()[-1])


def memdirty(guest: Guest, size_mib: int, thp: bool, timeout: float) -> dict:
    cmd = f"memdirty {size_mib}" + (" --thp" if thp else "")
    return json.loads(guest.run(cmd, timeout=timeout).stdout.strip().splitlines()[-1])


def faultscale(guest: Guest, mode: str, workers: int, seconds: float, region_mib: int, threads: bool,
               timeout: float) -> dict:
    """mode: "anon" (will-it-scale page_fault1) or "file" (page_fault2: a private tmpfs file mapping)."""
    cmd = f"faultscale {mode} {workers} {seconds:g} {region_mib}" + (" --threads" if threads else "")
    return json.loads(guest.run(cmd, timeout=timeout).stdout.strip().splitlines()[-1])


def _run_module(guest: Guest, name: str, params: str, timeout: float) -> str:
    """Load a test module (it does its work in its init function and stays loaded), remove it again, and
    return the kernel log it printed."""
    path = f"/lib/modules/{name}.ko"
    guest.run(f"test -f {path} || {{ echo 'this kernel has no {name} module' >&2; exit 1; }}")
    # A marker in the kernel log, not `dmesg -c`: the log must keep the boot's lines for the kernel_log checks.
    marker = f"harness: loading {name} {uuid.uuid4().hex}"
    guest.run(f"echo '{marker}' > /dev/kmsg")
    guest.run(f"insmod {path} {params}", timeout=timeout)
    out = guest.run("dmesg").stdout
    guest.run(f"rmmod {name}", check=False)
    return out.rpartition(marker)[2]


CONTIG_BENCH_LINE = re.compile(r"contig_bench: iterations=(\d+) order=(\d+) elapsed_us=(\d+)")


def contig_bench(guest: Guest, iterations: int, order: int, timeout: float) -> dict:
    """Load the free_contig_range microbenchmark module once and read its result line."""
    out = _run_module(guest, "contig_bench", f"iterations={iterations} order={order}", timeout)
    m = CONTIG_BENCH_LINE.search(out)
    if not m:
        raise HarnessError(f"contig_bench printed no result line; dmesg: {out.strip()[-300:]}")
    return {"iterations": int(m.group(1)), "order": int(m.group(2)), "elapsed_us": int(m.group(3))}


ZERO_SCAN_ORDER = re.compile(r"zero_scan: order=(\d+) blocks=(\d+) nonzero=(\d+)")
ZERO_SCAN_TOTAL = re.compile(r"zero_scan: pages=(\d+) nonzero=(\d+) pattern=(\d+) first=(-?\d+) head=([0-9a-f]{32})")


def zero_scan(guest: Guest, reserve_mib: int, timeout: float) -> dict:
    """Allocate __GFP_ZERO blocks of every order in the guest kernel until free memory is down to
    `reserve_mib`, and count the 4 KiB pages that were not zero (kernel_patches/modules/zero_scan.c).
    The result has memtouch's leak fields: nonzero_pages, pattern_pages, first_nonzero_page, samples."""
    out = _run_module(guest, "zero_scan", f"reserve_mib={reserve_mib}", timeout)
    total = ZERO_SCAN_TOTAL.search(out)
    if not total:
        raise HarnessError(f"zero_scan printed no result line; dmesg: {out.strip()[-300:]}")
    pages, nonzero, pattern, first = (int(total.group(i)) for i in range(1, 5))
    orders = {int(m.group(1)): {"blocks": int(m.group(2)), "nonzero_pages": int(m.group(3))}
              for m in ZERO_SCAN_ORDER.finditer(out)}
    return {"pages": pages, "nonzero_pages": nonzero, "pattern_pages": pattern, "first_nonzero_page": first,
            "samples": [{"page": first, "head": total.group(5)}] if nonzero else [], "orders": orders}
