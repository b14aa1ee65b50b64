"""The zeroing counting plan, the tracefs stats parser and the shell they send, without a guest
(tests/guest/test_zeroing_vm.py runs them on real guests)."""

from __future__ import annotations

from harness.guest import tracefs_counters as tc
from harness.guest import zeroing as z

# What `grep -H . /proc/vmstat STATS_FILES` printed on base+zeroing-stats (a transcript, cut short).
STATS = """/proc/vmstat:nr_free_pages 487700
/proc/vmstat:pgzero_alloc 26586
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:entries: 179
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:overrun: 10764
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:commit overrun: 0
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:bytes: 7908
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:oldest event ts:     7.678869
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:now ts:     8.317731
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:dropped events: 0
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu0/stats:read events: 0
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu1/stats:entries: 136
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu1/stats:overrun: 13064
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu1/stats:commit overrun: 2
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu1/stats:dropped events: 1
/sys/kernel/tracing/instances/btbz-alloc-o0/per_cpu/cpu1/stats:read events: 5
/sys/kernel/tracing/instances/btbz-thp-o9/per_cpu/cpu0/stats:entries: 0
/sys/kernel/tracing/instances/btbz-thp-o9/per_cpu/cpu0/stats:overrun: 0
"""

STOCK_FACTS = """tracefs=yes
alloc_event=yes
free_event=yes
kprobe_events=yes
vmstat_counters=no
buddyinfo_words=15
mem_auto_init=[    0.000000] mem auto-init: stack:all(zero), heap alloc:on, heap free:off
"""


def facts(**changes) -> z.GuestFacts:
    base = dict(tracefs=True, alloc_event=True, free_event=True, kprobe_events=True, max_order=10,
                mem_init=z.MemInit(init_on_alloc=False, init_on_free=False))
    return z.GuestFacts(**{**base, **changes})


def test_stats_sum_entries_overrun_and_read_over_cpus_and_keep_the_lost_apart():
    counts = tc.parse_stats(STATS)
    assert counts == {"btbz-alloc-o0": tc.Count(events=179 + 10764 + 136 + 13064 + 5, lost=3),
                      "btbz-thp-o9": tc.Count(events=0, lost=0)}


def test_facts_parse_the_stock_kernels_answers():
    f = z.GuestFacts.parse(STOCK_FACTS)
    assert f == facts(max_order=10, mem_init=z.MemInit(init_on_alloc=True, init_on_free=False))
    assert z.GuestFacts.parse("tracefs=no\nbuddyinfo_words=\nmem_auto_init=\n") == z.GuestFacts()


def test_no_tracefs_makes_every_metric_unavailable_with_the_reason():
    p = z.plan("auto", z.GuestFacts())
    assert p.summary() == "unavailable" and not p.buckets and not p.sources
    assert set(p.unavailable) == set(z.METRICS)
    assert all("no tracefs" in why for why in p.unavailable.values())
    assert p.record()["unavailable"][z.ALLOC].startswith("no tracefs instances at /sys/kernel/tracing")
    assert z.step_values(p, {}, {}, {"pgzero_alloc": 5}) == ({}, [])  # nothing is recorded, not even 0


def test_vmstat_asked_of_a_kernel_without_the_counters_is_unavailable_not_zero():
    p = z.plan("vmstat", facts())
    assert p.summary() == "unavailable"
    assert "zeroing-stats" in p.unavailable[z.ALLOC]


def test_auto_prefers_the_vmstat_counters_and_both_runs_the_trace_beside_them():
    p = z.plan("auto", facts(vmstat_counters=True))
    assert p.summary() == "vmstat" and not p.buckets
    assert z.step_values(p, {}, {}, {"pgzero_alloc": 7, "pgzero_free": 0, "pgzero_user_huge": 512}) == \
        ({z.ALLOC: 7, z.FREE: 0, z.THP: 512}, [])
    both = z.plan("both", facts(vmstat_counters=True))
    assert both.summary() == "vmstat+trace" and both.buckets
    assert both.sources[z.ALLOC].startswith("trace:")


def test_filters_follow_the_mem_auto_init_state():
    off = z.plan("trace", facts())
    alloc = [b for b in off.buckets if b.counter.event == z.ALLOC_EVENT]
    assert [b.pages for b in alloc] == [1 << o for o in range(11)]
    assert alloc[3].counter.filter == "order == 3 && gfp_flags & 256 && pfn != 18446744073709551615"
    assert off.always_zero == {z.FREE} and not [b for b in off.buckets if b.counter.event == z.FREE_EVENT]
    bulk = [b for b in off.buckets if b.counter.event == z.BULK_EVENT]
    assert [b.pages for b in bulk] == [1 << i for i in range(z.BULK_BITS)] + [0]
    assert bulk[2].counter.filter == "gfp & 256 && nr & 4"

    on_alloc = z.plan("trace", facts(mem_init=z.MemInit(init_on_alloc=True, init_on_free=False)))
    assert [b for b in on_alloc.buckets if b.counter.event == z.ALLOC_EVENT][0].counter.filter == \
        "order == 0 && pfn != 18446744073709551615"

    on_free = z.plan("trace", facts(mem_init=z.MemInit(init_on_alloc=True, init_on_free=True)))
    assert on_free.always_zero == {z.ALLOC}
    assert {b.counter.event for b in on_free.buckets} == {z.FREE_EVENT, z.THP_EVENT}
    thp = [b for b in on_free.buckets if b.counter.event == z.THP_EVENT]
    assert [b.pages for b in thp] == [1 << o for o in range(1, 11)] + [1 << 18, 0]


def test_no_kprobes_leaves_thp_unavailable_and_alloc_counted_by_the_tracepoint():
    p = z.plan("trace", facts(kprobe_events=False))
    assert "kprobe_events" in p.unavailable[z.THP]
    assert p.sources[z.ALLOC].startswith("trace:kmem/mm_page_alloc") and not p.kprobes


def test_step_values_sum_pages_and_leave_out_a_spoiled_count():
    p = z.plan("trace", facts())
    names = {b.counter.name for b in p.buckets}
    zero = {n: tc.Count(0, 0) for n in names}
    after = dict(zero, **{"btbz-alloc-o0": tc.Count(100, 0), "btbz-alloc-o2": tc.Count(3, 0),
                          "btbz-bulk-b2": tc.Count(5, 0), "btbz-thp-o9": tc.Count(2, 0)})
    assert z.step_values(p, zero, after, {}) == ({z.ALLOC: 100 + 12 + 20, z.FREE: 0, z.THP: 1024}, [])
    stray = dict(after, **{"btbz-thp-stray": tc.Count(1, 0), "btbz-alloc-o1": tc.Count(1, 1)})
    values, problems = z.step_values(p, zero, stray, {})
    assert values == {z.FREE: 0}
    assert len(problems) == 2 and "lost 1 event" in problems[0] and "outside the counted range" in problems[1]


def test_setup_shell_stays_under_dropbears_command_limit_and_quotes_filters():
    p = z.plan("both", facts(mem_init=z.MemInit(init_on_alloc=False, init_on_free=False)))
    script = tc.setup_script([b.counter for b in p.buckets], z.PREFIX)
    assert len(script) < 9000
    assert "c btbz-alloc-o0 kmem/mm_page_alloc 'order == 0 && gfp_flags & 256 && pfn != 18446744073709551615'" \
        in script.splitlines()
