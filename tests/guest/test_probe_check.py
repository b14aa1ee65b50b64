"""The fault-path check that decides whether a memtouch/memdirty step is a result at all."""

from __future__ import annotations

from harness.guest.probe_check import check_faults

PAGES_64M = 64 * 256


def touch(faults, thp=False, mib=64):
    return {"mib": mib, "pages": mib * 256, "thp": thp, "faults": faults}


def test_one_write_fault_per_page_is_valid():
    check = check_faults(touch(PAGES_64M + 1), {"thp_fault_alloc": 0})
    assert check.invalid is None
    assert "16385 faults for 16384 pages" in check.note


def test_read_then_cow_fault_per_page_is_invalid():
    # What `lock addq $0` did under TCG: 33202 faults for 16384 pages (measured, issue 8).
    check = check_faults(touch(33202), {})
    assert check.invalid is not None
    assert "2.03 per page" in check.invalid and "copy-on-write" in check.invalid


def test_fewer_faults_than_pages_is_invalid():
    check = check_faults(touch(100), {})
    assert check.invalid is not None and "mapped before" in check.invalid


def test_a_few_stray_faults_are_tolerated_but_not_many():
    assert check_faults(touch(PAGES_64M + PAGES_64M // 100), {}).invalid is None
    assert check_faults(touch(PAGES_64M + PAGES_64M // 100 + 1), {}).invalid is not None


def test_thp_mode_allocating_thps_is_valid():
    check = check_faults(touch(33, thp=True), {"thp_fault_alloc": 32, "thp_fault_fallback": 0})
    assert check.invalid is None and check.thp_fallbacks == 0


def test_thp_mode_without_any_thp_is_invalid():
    # What the old memtouch did: the huge zero page was split and every 4 KiB page COW-faulted.
    check = check_faults(touch(16846, thp=True), {"thp_fault_alloc": 0, "thp_fault_fallback": 0})
    assert check.invalid is not None and "no transparent huge page" in check.invalid


def test_thp_fallbacks_are_tolerated_and_reported():
    faults = 30 + 2 * 512
    check = check_faults(touch(faults, thp=True), {"thp_fault_alloc": 30, "thp_fault_fallback": 2})
    assert check.invalid is None
    assert check.thp_fallbacks == 2 and "2 of 32 fell back" in check.note


def test_thp_ranges_neither_allocated_nor_fallen_back_are_invalid():
    check = check_faults(touch(20 + 12 * 512, thp=True), {"thp_fault_alloc": 20, "thp_fault_fallback": 0})
    assert check.invalid is not None and "< 32 huge pages expected" in check.invalid


def test_thp_fault_count_must_match_the_huge_pages():
    check = check_faults(touch(4000, thp=True), {"thp_fault_alloc": 32, "thp_fault_fallback": 0})
    assert check.invalid is not None and "expected 32" in check.invalid


def test_odd_size_thp_tail_faults_as_4k_pages():
    check = check_faults(touch(2 + 256, thp=True, mib=5), {"thp_fault_alloc": 2})
    assert check.invalid is None


def test_probe_without_fault_count_is_invalid():
    assert check_faults({"mib": 1, "pages": 256, "thp": False}, {}).invalid is not None
