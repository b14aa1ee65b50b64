"""What each metric a bundle records means: its unit, kind and which direction is better.

A metric row in ``metrics.json`` is ``{name, value, unit, phase, rep, kernel}`` (harness.results.model.MetricRow).  The compare and report
stages judge changes through :func:`definition`, never by guessing from the value.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import InputError

if TYPE_CHECKING:
    from harness.scenario.schema import Scenario

TIME = "time"  # wall or CPU time; only comparable on the same accelerator, QEMU and host CPU
COUNTER = "counter"  # event counts (vmstat deltas, non-zero pages); comparable anywhere
MEMORY = "memory"  # host or guest memory amounts


@dataclass(frozen=True)
class MetricDef:
    name: str  # exact name or fnmatch pattern
    unit: str
    kind: str
    better: str | None  # "lower", "higher" or None (informational, never flagged)
    doc: str
    headline: bool = False  # what a scenario's card in the report shows first, and what its trends plot
    # Timed on the host's clock also under icount: the host's load moves it, and so does how many guests ran at once.
    host_clock: bool = False
    recorded: bool = True  # False: only older bundles have it; a run today never records it


_DEFS = [
    MetricDef("boot_to_ssh_s", "s", TIME, "lower", "QEMU start until the guest's sshd answered", host_clock=True),
    MetricDef("save_state_s", "s", TIME, None, "saving the booted guest for the kernel's next repetitions "
              "(repetitions_from: snapshot)", host_clock=True),
    MetricDef("restore_s", "s", TIME, "lower", "loading the kernel's saved boot into a fresh QEMU instead of "
              "booting (repetitions_from: snapshot)", host_clock=True),
    MetricDef("balloon_inflate_s", "s", TIME, "lower", "balloon target set until query-balloon reached it (inflate)",
              host_clock=True),
    MetricDef("balloon_deflate_s", "s", TIME, "lower", "balloon target set until query-balloon reached it (deflate)",
              host_clock=True),
    MetricDef("balloon_actual_mib", "MiB", MEMORY, None, "guest memory the balloon leaves to the guest after a step"),
    MetricDef("reporting_settle_s", "s", TIME, None,
              "guest time until free page reporting stopped (host RSS steady, page_reporting_pages flat)"),
    MetricDef("fault_in_ms", "ms", TIME, "lower",
              "memtouch time to fault every page in (MADV_POPULATE_WRITE, or the store loop)", headline=True),
    MetricDef("cpu_ms", "ms", TIME, "lower", "memtouch user+system CPU time"),
    MetricDef("sys_ms", "ms", TIME, "lower", "memtouch system CPU time (page faults, zeroing)", headline=True),
    MetricDef("nonzero_pages", "pages", COUNTER, "lower", "pages that were not all-zero on first read, by memtouch or the kernel's __GFP_ZERO scan (must be 0)", headline=True),
    MetricDef("kernel_scanned_pages", "pages", COUNTER, None,
              "4 KiB pages the kernel_zero_scan module allocated with __GFP_ZERO and read back"),
    MetricDef("stale_pattern_pages", "pages", COUNTER, "lower", "non-zero pages still holding memdirty's pattern"),
    MetricDef("dirty_ms", "ms", TIME, None, "memdirty wall time"),
    MetricDef("probe_faults", "faults", COUNTER, None,
              "page faults memtouch/memdirty/faultscale took while faulting in (one per page, or per THP)"),
    MetricDef("fault_ops_per_s", "ops/s", TIME, "higher",
              "faultscale: 4 KiB pages mapped, written and unmapped per second of guest time, summed over workers"),
    MetricDef("rss_mib", "MiB", MEMORY, None, "host RSS of the QEMU process at the end of a step"),
    MetricDef("rss_drop_mib", "MiB", MEMORY, "higher", "host RSS returned by free page reporting: the peak of the step before the wait to its end", headline=True),
    MetricDef("contig_bench_us", "us", TIME, "lower", "in-guest alloc order-9 + split_page + free_contig_range loop", headline=True),
    # Informational: the per-case verdicts (kselftest.json) are what compare judges, pass to fail named.
    MetricDef("kselftest_pass", "cases", COUNTER, None, "selftest cases that passed in a kselftest step"),
    MetricDef("kselftest_fail", "cases", COUNTER, None, "selftest cases that failed in a kselftest step"),
    MetricDef("kselftest_skip", "cases", COUNTER, None, "selftest cases skipped (with the reason in kselftest.json)"),
    MetricDef("stress_touch_runs", "runs", COUNTER, None, "memtouch runs completed during a stress step"),
    MetricDef("stress_dirty_runs", "runs", COUNTER, None, "memdirty runs completed during a stress step"),
    MetricDef("balloon_cycles", "cycles", COUNTER, None, "inflate/deflate cycles the host drove during a stress step"),
    *(d for prefix, window in (("migration", "the live migration"), ("snapshot", "the background snapshot"))
      for d in (
        MetricDef(f"{prefix}_wall_s", "s", TIME, None, f"{window}, from its start until the guest ran on (or the "
                  "file was written)", host_clock=True),
        MetricDef(f"{prefix}_total_ms", "ms", TIME, None, f"QEMU's total-time of {window}", host_clock=True),
        MetricDef(f"{prefix}_downtime_ms", "ms", TIME, "lower", f"QEMU's downtime of {window}", host_clock=True),
        MetricDef(f"{prefix}_transferred_mib", "MiB", MEMORY, None, f"guest RAM QEMU sent in {window}"),
        MetricDef(f"{prefix}_postcopy_requests", "pages", COUNTER, None,
                  f"pages the destination faulted in from the source during {window} (postcopy)"),
        MetricDef(f"{prefix}_reported_pages", "pages", COUNTER, None,
                  f"pages the guest reported by free page reporting during {window} (page_reporting_pages)"))),
    MetricDef("window_balloon_sent_s", "s", TIME, None,
              "when the balloon target of a migrate or background_snapshot step was set, seconds into the window",
              host_clock=True),
    MetricDef("window_balloon_actual_mib", "MiB", MEMORY, None,
              "guest memory the balloon left to the guest when the window closed"),
    MetricDef("vmstat.pgzero_skip_*", "pages", COUNTER, "higher", "zeroings skipped because the page was known zero", headline=True),
    MetricDef("vmstat.pgzero_*", "pages", COUNTER, "lower", "base pages zeroed by the kernel"),
    MetricDef("zeroing.alloc_pages", "pages", COUNTER, "lower",
              "base pages zeroed on allocation (__GFP_ZERO or init_on_alloc); manifest kernels[].zeroing says how "
              "they were counted"),
    MetricDef("zeroing.free_pages", "pages", COUNTER, "lower", "base pages zeroed on free (init_on_free)"),
    MetricDef("zeroing.thp_pages", "pages", COUNTER, "lower",
              "base pages zeroed by folio_zero_user() for THP, mTHP and hugetlb faults"),
    MetricDef("kprobe.*", "calls", COUNTER, "lower", "calls of a zeroing function counted by a kprobe event "
              "(bundles before the zeroing.* metrics)", recorded=False),
    MetricDef("vmstat.*", "pages", COUNTER, None, "delta of a /proc/vmstat counter over a step"),
    MetricDef("zeroing_paths.*", "pages", COUNTER, None,
              "zeroed (or skipped) pages of a zeroing_paths step by the path they came from (zeroing-sources)"),
]


def is_headline(name: str) -> bool:
    return definition(name).headline


def definition(name: str) -> MetricDef:
    """The definition of a metric name; unknown names are informational counters."""
    for d in _DEFS:
        if fnmatch.fnmatchcase(name, d.name):
            return d
    return MetricDef(name, "", COUNTER, None, "unknown metric")



def _defined(name: str) -> MetricDef | None:
    return next((d for d in _DEFS if fnmatch.fnmatchcase(name, d.name)), None)


def is_recorded(name: str) -> bool:
    """Whether a run can record a metric of this name: it has a definition here (tests/results/test_metrics.py
    holds every name the steps record to one), and a vmstat.* delta is of a counter the steps track."""
    d = _defined(name)
    if d is None or not d.recorded:
        return False
    if name.startswith("vmstat."):
        from harness.guest.probes import is_tracked  # lazily: the guest stage pulls in SSH

        return is_tracked(name.removeprefix("vmstat."))
    return True


def check_expectation_metrics(scenario: Scenario) -> None:
    """InputError for a metric or ratio check naming a metric no run records: it could only fail at the end."""
    for group in ("metrics", "ratios"):
        for i, check in enumerate(getattr(scenario.expect, group)):
            if not is_recorded(check.name):
                near = difflib.get_close_matches(check.name, [d.name for d in _DEFS if d.recorded], n=3)
                raise InputError(f"{scenario.path}: expect.{group}[{i}].name: {check.name!r} is not a metric the "
                                 "harness records" + (f" (did you mean {', '.join(near)}?)" if near else
                                                      " (harness/results/metrics.py lists them)"))
