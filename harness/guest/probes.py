"""What the harness measures inside the guest: memtouch/memdirty/faultscale, /proc snapshots (zeroing counts:
`zeroing`)."""

from __future__ import annotations

import json
import re

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


CONTIG_BENCH_LINE = re.compile(r"contig_bench: iterations=(\d+) order=(\d+) elapsed_us=(\d+)")


def contig_bench(guest: Guest, iterations: int, order: int, timeout: float) -> dict:
    """Load the free_contig_range microbenchmark module once and read its result line."""
    guest.run("test -f /lib/modules/contig_bench.ko || { echo 'this kernel has no contig_bench module' >&2; exit 1; }")
    guest.run("dmesg -c > /dev/null")
    guest.run(f"insmod /lib/modules/contig_bench.ko iterations={iterations} order={order}", timeout=timeout)
    out = guest.run("dmesg").stdout
    guest.run("rmmod contig_bench", check=False)
    m = CONTIG_BENCH_LINE.search(out)
    if not m:
        raise HarnessError(f"contig_bench printed no result line; dmesg: {out.strip()[-300:]}")
    return {"iterations": int(m.group(1)), "order": int(m.group(2)), "elapsed_us": int(m.group(3))}
