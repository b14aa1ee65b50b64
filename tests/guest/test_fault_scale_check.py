"""The check that decides whether a faultscale step is a result: one fault per page written, in every worker."""

from __future__ import annotations

from harness.guest.probe_check import check_fault_scale

REGION = 32768  # 4 KiB pages in faultscale's default 128 MiB region


def scale(worker_ops, worker_faults):
    return {"ops": sum(worker_ops), "faults": sum(worker_faults), "worker_ops": worker_ops,
            "worker_faults": worker_faults}


def test_one_fault_per_page_in_every_worker_is_valid():
    # Measured on the stock kernel (icount, 2 workers, anon): 65538 faults for 65536 pages each worker.
    check = check_fault_scale(scale([2 * REGION, 2 * REGION], [2 * REGION + 2, 2 * REGION + 2]),
                              {"pgfault": 131549, "thp_fault_alloc": 0})
    assert check.invalid is None
    assert "131076 faults for 131072 pages in 2 worker(s)" in check.note


def test_a_worker_with_twice_the_faults_is_invalid_and_named():
    check = check_fault_scale(scale([REGION, REGION], [REGION, 2 * REGION]), {})
    assert check.invalid is not None
    assert check.invalid.startswith("worker 1:") and "copy-on-write" in check.invalid


def test_fewer_faults_than_pages_is_invalid():
    check = check_fault_scale(scale([REGION], [REGION // 2]), {})
    assert check.invalid is not None and "already mapped" in check.invalid


def test_a_worker_that_faulted_nothing_is_invalid():
    assert "faulted no page" in (check_fault_scale(scale([REGION, 0], [REGION, 0]), {}).invalid or "")


def test_the_system_must_have_counted_the_faults_too():
    check = check_fault_scale(scale([REGION], [REGION]), {"pgfault": REGION - 1})
    assert check.invalid is not None and "pgfault rose by" in check.invalid


def test_a_transparent_huge_page_is_invalid():
    check = check_fault_scale(scale([REGION], [REGION]), {"pgfault": REGION, "thp_fault_alloc": 3})
    assert check.invalid is not None and "transparent huge pages" in check.invalid


def test_an_old_probe_without_per_worker_counts_is_invalid():
    assert check_fault_scale({"ops": 10, "faults": 10}, {}).invalid is not None
