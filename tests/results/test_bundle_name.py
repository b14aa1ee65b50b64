"""Bundle directory names stay valid file names however long the kernel specs are."""

from __future__ import annotations

from harness.results.writer import MAX_NAME, bundle_name


def test_short_names_read_as_before():
    assert bundle_name("20261130T000000Z", "smoke", ["stock"]) == "20261130T000000Z-smoke-stock"


def test_long_stacks_are_cut_with_a_hash_that_keeps_them_apart():
    long = "base+zeroing-stats+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed"
    a = bundle_name("20261130T000000Z", "reporting", ["base+zeroing-stats", long, long + "+pg-zeroed-reporting"])
    b = bundle_name("20261130T000000Z", "reporting", ["base+zeroing-stats", long, long + "+free-contig-range"])
    assert len(a) == MAX_NAME and len(b) == MAX_NAME and a != b
    assert a.startswith("20261130T000000Z-reporting-base+zeroing-stats_vs_")
