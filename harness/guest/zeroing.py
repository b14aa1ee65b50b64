"""How many pages a guest kernel zeroes, where, and which method counted them.

Three metrics, in base pages per step: ``zeroing.alloc_pages`` (post_alloc_hook(): __GFP_ZERO or
init_on_alloc), ``zeroing.free_pages`` (free_pages_prepare(): init_on_free) and ``zeroing.thp_pages``
(folio_zero_user(): THP, mTHP and hugetlb faults).  Two methods count them:

- ``vmstat``: the zeroing-stats series' counters pgzero_alloc, pgzero_free and pgzero_user_huge, counted
  where the kernel zeroes.  Only our patched kernels have them.
- ``trace``: any kernel with tracefs.  post_alloc_hook() zeroes every page of a successful allocation when
  ``!init_on_free && (init_on_alloc || gfp & __GFP_ZERO)``, and kmem:mm_page_alloc (pfn, order, gfp_flags)
  fires for each one at the end of __alloc_pages(); free_pages_prepare() zeroes every freed page when
  init_on_free, and fires kmem:mm_page_free (order); folio_zero_user() zeroes a whole large folio, and a
  kprobe reads the folio's order from folio->_flags_1.  The mem auto-init state comes from the boot log.
  alloc_pages_bulk() (vmalloc: the kernel stacks of new tasks, 4 pages each) allocates without the
  tracepoint, so a kprobe on it adds the pages each zeroing call asks for.  Each (event, order) pair is
  a tracefs instance counting its events (tracefs_counters), so pages are exact sums of events * 2^order
  (bulk calls: one instance per bit of nr_pages), with no hist triggers (our kernels have none) and no
  trace to parse.  What it misses: compaction's migration targets under init_on_alloc, a bulk call
  that gets fewer pages than it asked for; and on kernels that change the zeroing decision (the seeds'
  skip patches) it counts the zeroing the stock logic would do.

`guest.zeroing` in a scenario picks: ``auto`` (vmstat where the kernel has the counters, else trace),
``vmstat``, ``trace``, or ``both`` (zeroing.* from trace beside the vmstat.* counters, to validate one
against the other).  A metric no method can count is left out and recorded as unavailable with the
reason, never as 0; a metric the kernel provably never increments (free_pages with init_on_free off) is 0.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from harness.guest import tracefs_counters as tc
from harness.guest.probes import parse_kv
from harness.guest.ssh import Guest

ALLOC, FREE, THP = "zeroing.alloc_pages", "zeroing.free_pages", "zeroing.thp_pages"
METRICS = (ALLOC, FREE, THP)
VMSTAT_COUNTER = {ALLOC: "pgzero_alloc", FREE: "pgzero_free", THP: "pgzero_user_huge"}
METHODS = ("auto", "vmstat", "trace", "both")

ALLOC_EVENT, FREE_EVENT = "kmem/mm_page_alloc", "kmem/mm_page_free"
KPROBE_GROUP, KPROBE_FUNC = "btbzero", "folio_zero_user"
THP_EVENT = f"{KPROBE_GROUP}/{KPROBE_FUNC}"
# folio_order() is folio->_flags_1 & 0xff; _flags_1 is the first word of the folio's second struct page,
# 64 bytes in on x86-64.  An order outside the expected ones lands in the stray bucket and voids the count.
THP_KPROBE = f"p:{THP_EVENT} {KPROBE_FUNC} order=+64(%di):u8"
BULK_FUNC = "alloc_pages_bulk_noprof"  # 6.10 and later; __alloc_pages_bulk before
BULK_EVENT = f"{KPROBE_GROUP}/alloc_pages_bulk"
BULK_KPROBE = f"p:{BULK_EVENT} {BULK_FUNC} gfp=%di:x32 nr=%cx:s32"
BULK_BITS = 10  # nr_pages below 1024 (vmalloc asks for at most 100 at a time); more lands in the stray bucket
PUD_ORDER = 18  # 1 GiB hugetlb folios on x86-64
GFP_ZERO = 0x100
FAILED_PFN = 2**64 - 1  # mm_page_alloc's pfn when the allocation failed
PREFIX = "btbz-"
VMSTAT_PREFIX = "/proc/vmstat:"
MEM_AUTO_INIT = re.compile(r"mem auto-init:.*heap alloc:(on|off), heap free:(on|off)")

FACTS_SCRIPT = f"""T={tc.TRACING}
yes() {{ if "$@"; then echo yes; else echo no; fi; }}
echo "tracefs=$(yes test -d $T/instances)"
echo "alloc_event=$(yes test -d $T/events/{ALLOC_EVENT})"
echo "free_event=$(yes test -d $T/events/{FREE_EVENT})"
echo "kprobe_events=$(yes test -w $T/kprobe_events)"
echo "vmstat_counters=$(yes grep -q '^pgzero_alloc ' /proc/vmstat)"
echo "buddyinfo_words=$(head -n 1 /proc/buddyinfo | wc -w)"
echo "mem_auto_init=$(dmesg | grep -m 1 'mem auto-init:')"
"""


@dataclass(frozen=True)
class MemInit:
    init_on_alloc: bool
    init_on_free: bool


@dataclass(frozen=True)
class GuestFacts:
    """What a booted guest offers for counting zeroing (FACTS_SCRIPT's answers)."""

    vmstat_counters: bool = False
    tracefs: bool = False
    alloc_event: bool = False
    free_event: bool = False
    kprobe_events: bool = False
    max_order: int | None = None  # MAX_PAGE_ORDER, from the columns of /proc/buddyinfo
    mem_init: MemInit | None = None  # None: the boot log did not say

    @classmethod
    def parse(cls, text: str) -> GuestFacts:
        kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        words = kv.get("buddyinfo_words", "").strip()
        m = MEM_AUTO_INIT.search(kv.get("mem_auto_init", ""))
        return cls(vmstat_counters=kv.get("vmstat_counters") == "yes", tracefs=kv.get("tracefs") == "yes",
                   alloc_event=kv.get("alloc_event") == "yes", free_event=kv.get("free_event") == "yes",
                   kprobe_events=kv.get("kprobe_events") == "yes",
                   max_order=int(words) - 5 if words.isdigit() and int(words) > 5 else None,
                   mem_init=MemInit(m.group(1) == "on", m.group(2) == "on") if m else None)


def read_facts(guest: Guest) -> GuestFacts:
    return GuestFacts.parse(guest.run(FACTS_SCRIPT).stdout)


@dataclass(frozen=True)
class Bucket:
    """A tracefs counter whose events each stand for `pages` base pages of `metric` (0: a stray order)."""

    counter: tc.Counter
    metric: str
    pages: int


@dataclass
class Plan:
    """How each zeroing metric is counted on one kernel."""

    requested: str
    facts: GuestFacts
    vmstat: bool = False  # zeroing.* from the vmstat counters
    trace: bool = False  # zeroing.* from tracefs (with `both`, the vmstat.* counters run beside it)
    buckets: list[Bucket] = field(default_factory=list)
    kprobes: dict[str, str] = field(default_factory=dict)  # kprobe event -> its kprobe_events definition
    sources: dict[str, str] = field(default_factory=dict)  # metric -> how it is counted
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it cannot be
    always_zero: set[str] = field(default_factory=set)  # metrics the kernel provably never increments

    @property
    def methods(self) -> list[str]:
        return [m for m, on in (("vmstat", self.vmstat or self.requested == "both" and self.facts.vmstat_counters),
                                ("trace", self.trace)) if on]

    def summary(self) -> str:
        """"vmstat", "trace", "vmstat+trace", or "unavailable" (manifest kernels[].zeroing_counters)."""
        return "+".join(self.methods) if self.sources else "unavailable"

    def describe(self) -> str:
        parts = [f"{m.removeprefix('zeroing.')}: {how}" for m, how in self.sources.items()]
        parts += [f"{m.removeprefix('zeroing.')}: unavailable ({why})" for m, why in self.unavailable.items()]
        return f"{self.summary()} ({'; '.join(parts)})"

    def record(self) -> dict:
        """manifest kernels[].zeroing: what counted each metric, and why the others are not counted."""
        mem = self.facts.mem_init
        return {"requested": self.requested, "methods": self.methods, "metrics": dict(self.sources),
                "unavailable": dict(self.unavailable),
                "init_on_alloc": None if mem is None else mem.init_on_alloc,
                "init_on_free": None if mem is None else mem.init_on_free}

    def make_unavailable(self, metrics: list[str], why: str) -> None:
        for m in metrics:
            self.sources.pop(m, None)
            self.always_zero.discard(m)
            self.unavailable[m] = why
        self.buckets = [b for b in self.buckets if b.metric not in metrics]
        if THP in metrics:
            self.kprobes.pop(THP_EVENT, None)
        self.trace = self.trace and any(m in self.sources for m in METRICS)


def plan(requested: str, facts: GuestFacts) -> Plan:
    """Which method counts each metric, from what the guest offers (pure: no guest needed)."""
    p = Plan(requested, facts)
    use_vmstat = requested == "vmstat" or (requested == "auto" and facts.vmstat_counters)
    if use_vmstat:
        if not facts.vmstat_counters:
            p.unavailable = {m: "no pgzero_* counters in /proc/vmstat (a kernel without the zeroing-stats series)"
                             for m in METRICS}
            return p
        p.vmstat = True
        p.sources = {m: f"vmstat:{VMSTAT_COUNTER[m]}" for m in METRICS}
        return p
    why_not = _trace_blocker(facts)
    if why_not:
        p.unavailable = {m: why_not for m in METRICS}
        return p
    assert facts.mem_init is not None and facts.max_order is not None
    p.trace = True
    orders = range(facts.max_order + 1)
    if facts.mem_init.init_on_free:
        p.always_zero.add(ALLOC)
        p.sources[ALLOC] = "none: init_on_free is on, so post_alloc_hook() zeroes nothing"
        if facts.free_event:
            p.sources[FREE] = f"trace:{FREE_EVENT} (every free: init_on_free is on)"
            p.buckets += [Bucket(tc.Counter(f"{PREFIX}free-o{o}", FREE_EVENT, f"order == {o}"), FREE, 1 << o)
                          for o in orders]
        else:
            p.unavailable[FREE] = f"no {FREE_EVENT} tracepoint"
    else:
        p.always_zero.add(FREE)
        p.sources[FREE] = "none: init_on_free is off, so free_pages_prepare() zeroes nothing"
        zeroed = "" if facts.mem_init.init_on_alloc else f" && gfp_flags & {GFP_ZERO}"
        p.sources[ALLOC] = (f"trace:{ALLOC_EVENT} ("
                            + ("every allocation: init_on_alloc is on" if facts.mem_init.init_on_alloc
                               else "__GFP_ZERO allocations: init_on_alloc is off") + ")")
        p.buckets += [Bucket(tc.Counter(f"{PREFIX}alloc-o{o}", ALLOC_EVENT,
                                        f"order == {o}{zeroed} && pfn != {FAILED_PFN}"), ALLOC, 1 << o)
                      for o in orders]
        if facts.kprobe_events:
            p.kprobes[BULK_EVENT] = BULK_KPROBE
            p.sources[ALLOC] += f" + kprobe {BULK_FUNC} (pages asked for)"
            cond = f"gfp & {GFP_ZERO} && " if zeroed else ""
            p.buckets += [Bucket(tc.Counter(f"{PREFIX}bulk-b{b}", BULK_EVENT, f"{cond}nr & {1 << b}"), ALLOC, 1 << b)
                          for b in range(BULK_BITS)]
            p.buckets.append(Bucket(tc.Counter(f"{PREFIX}bulk-stray", BULK_EVENT,
                                               f"{cond}(nr < 0 || nr >= {1 << BULK_BITS})"), ALLOC, 0))
    if facts.kprobe_events:
        p.kprobes[THP_EVENT] = THP_KPROBE
        p.sources[THP] = f"trace:kprobe {KPROBE_FUNC}, folio order from folio->_flags_1"
        thp_orders = [*range(1, facts.max_order + 1), PUD_ORDER]
        p.buckets += [Bucket(tc.Counter(f"{PREFIX}thp-o{o}", THP_EVENT, f"order == {o}"), THP, 1 << o)
                      for o in thp_orders]
        stray = f"order == 0 || (order > {facts.max_order} && order != {PUD_ORDER})"
        p.buckets.append(Bucket(tc.Counter(f"{PREFIX}thp-stray", THP_EVENT, stray), THP, 0))
    else:
        p.unavailable[THP] = "no writable kprobe_events in tracefs (CONFIG_KPROBE_EVENTS off)"
    return p


def _trace_blocker(facts: GuestFacts) -> str | None:
    if not facts.tracefs:
        return "no tracefs instances at /sys/kernel/tracing (CONFIG_FTRACE off, or tracefs not mounted)"
    if not facts.alloc_event:
        return f"no {ALLOC_EVENT} tracepoint in tracefs"
    if facts.mem_init is None:
        return "the boot log does not say whether init_on_alloc/init_on_free are on ('mem auto-init:' line)"
    if facts.max_order is None:
        return "cannot read the highest page order from /proc/buddyinfo"
    return None


def setup(guest: Guest, requested: str) -> Plan:
    """Read what the guest offers, plan, and start the trace counters the plan needs."""
    p = plan(requested, read_facts(guest))
    for event, definition in list(p.kprobes.items()):
        res = guest.run(f"echo {shlex.quote(definition)} >> {tc.TRACING}/kprobe_events", check=False)
        if res.rc == 0:
            continue
        why = f"kprobe {definition.split()[1]} refused: {res.stderr.strip()[-200:]}"
        if event == THP_EVENT:
            p.make_unavailable([THP], why)
        else:  # the tracepoint still counts every other allocation
            del p.kprobes[event]
            p.buckets = [b for b in p.buckets if b.counter.event != event]
            p.sources[ALLOC] = p.sources[ALLOC].split(" + kprobe")[0] + f" (alloc_pages_bulk() not counted: {why})"
    if p.buckets:
        res = guest.run(tc.setup_script([b.counter for b in p.buckets], PREFIX), check=False)
        if res.rc != 0:
            p.make_unavailable(sorted({b.metric for b in p.buckets}),
                               f"tracefs counter refused: {res.stderr.strip()[-300:]}")
    return p


def read_counters(guest: Guest, p: Plan) -> tuple[dict[str, int], dict[str, tc.Count]]:
    """/proc/vmstat and the plan's tracefs counters.  One grep reads them all, so no process starts between
    the two reads (starting one zeroes some 40 pages, which would fall into one count and not the other)."""
    if not p.buckets:
        return parse_kv(guest.run("cat /proc/vmstat").stdout), {}
    out = guest.run(f"grep -H . /proc/vmstat {tc.stats_files(PREFIX)}").stdout
    vmstat_lines = [line.removeprefix(VMSTAT_PREFIX) for line in out.splitlines() if line.startswith(VMSTAT_PREFIX)]
    return parse_kv("\n".join(vmstat_lines)), tc.parse_stats(out)


def step_values(p: Plan, before: dict[str, tc.Count], after: dict[str, tc.Count],
                vmstat_delta: dict[str, int]) -> tuple[dict[str, int], list[str]]:
    """Each zeroing metric's pages over a step, and why any metric had to be left out of it."""
    if p.vmstat:
        return {m: vmstat_delta[VMSTAT_COUNTER[m]] for m in p.sources if VMSTAT_COUNTER[m] in vmstat_delta}, []
    values = {m: 0 for m in p.always_zero}
    problems: list[str] = []
    spoiled: set[str] = set()
    for b in p.buckets:
        name = b.counter.name
        if name not in before or name not in after:
            problems.append(f"{b.metric}: tracefs counter {name} missing")
            spoiled.add(b.metric)
            continue
        events = after[name].events - before[name].events
        if after[name].lost != before[name].lost:
            problems.append(f"{b.metric}: {name} lost {after[name].lost - before[name].lost} event(s) uncounted")
            spoiled.add(b.metric)
        if b.pages == 0 and events:
            problems.append(f"{b.metric}: {events} {b.counter.event} event(s) outside the counted range "
                            f"({b.counter.filter})")
            spoiled.add(b.metric)
        values[b.metric] = values.get(b.metric, 0) + events * b.pages
    return {m: v for m, v in values.items() if m not in spoiled}, problems
