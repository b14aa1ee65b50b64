"""The parsers that turn guest output into numbers."""

from __future__ import annotations

from harness.guest import probes


def test_parse_kv_reads_vmstat_and_meminfo_lines():
    text = "nr_free_pages 12345\npgzero_alloc 7\nMemTotal:  2048000 kB\nbogus line\nneg -3\n"
    assert probes.parse_kv(text) == {"nr_free_pages": 12345, "pgzero_alloc": 7, "MemTotal": 2048000, "neg": -3}


def test_tracked_deltas_keep_only_the_zeroing_related_counters():
    before = {"pgzero_alloc": 10, "pgfault": 100, "nr_free_pages": 5}
    after = {"pgzero_alloc": 15, "pgzero_skip_reported": 4, "pgfault": 130, "nr_free_pages": 9, "balloon_inflate": 2}
    assert probes.tracked_deltas(before, after) == {"pgzero_alloc": 5, "pgzero_skip_reported": 4, "pgfault": 30,
                                                    "balloon_inflate": 2}


def test_contig_bench_result_line():
    m = probes.CONTIG_BENCH_LINE.search("[ 3.1] contig_bench: iterations=2000 order=9 elapsed_us=81234\n")
    assert m and m.groups() == ("2000", "9", "81234")

