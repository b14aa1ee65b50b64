"""Bundle directory names stay valid file names however long the kernel specs are, and unique: two runs
started in the same second into one results directory both keep their bundle."""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from harness.results.bundle import load_bundle
from harness.results.writer import MAX_NAME, BundleWriter, bundle_name


def test_short_names_read_as_before():
    assert bundle_name("20261130T000000Z", "smoke", ["stock"]) == "20261130T000000Z-smoke-stock"


def test_long_stacks_are_cut_with_a_hash_that_keeps_them_apart():
    long = "base+zeroing-stats+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed"
    a = bundle_name("20261130T000000Z", "reporting", ["base+zeroing-stats", long, long + "+pg-zeroed-reporting"])
    b = bundle_name("20261130T000000Z", "reporting", ["base+zeroing-stats", long, long + "+free-contig-range"])
    assert len(a) == MAX_NAME and len(b) == MAX_NAME and a != b
    assert a.startswith("20261130T000000Z-reporting-base+zeroing-stats_vs_")


def test_a_second_run_of_the_same_name_gets_a_number_that_fits():
    assert bundle_name("20261130T000000Z", "smoke", ["stock"], 2) == "20261130T000000Z-smoke-stock-2"
    long = "base+zeroing-stats+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins+pg-zeroed"
    first, second = (bundle_name("20261130T000000Z", "reporting", [long, long + "+x"], n) for n in (1, 2))
    assert len(second) == MAX_NAME and second.endswith("-2") and second[:-2].rsplit("-", 1)[1] == first.rsplit("-", 1)[1]


def _write_bundle(results: str, start: Barrier, created: Barrier, out: Queue) -> None:
    start.wait()
    w = BundleWriter(Path(results), "smoke", ["stock"])
    w.add_metric("nonzero_pages", os.getpid(), phase="touch", rep=0, kernel="stock")
    created.wait()  # both runs exist under their temporary names before either is renamed into place
    out.put((os.getpid(), str(w.finish("complete", None))))


def test_two_runs_started_in_the_same_second_both_write_their_bundle(tmp_path):
    """Two real writer processes into one results directory, started (and finishing) in the same second."""
    ctx = multiprocessing.get_context("fork")
    for _attempt in range(3):
        results = tmp_path / f"r{_attempt}"
        start, created, out = ctx.Barrier(3), ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_write_bundle, args=(str(results), start, created, out)) for _ in range(2)]
        for p in procs:
            p.start()
        time.sleep(1.05 - time.time() % 1)  # just after a second begins: both stamps fall in that second
        start.wait()
        written = dict(out.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        names = sorted(Path(path).name for path in written.values())
        if names[0][:16] == names[1][:16]:
            break
    assert names == [f"{names[0]}", f"{names[0]}-2"] and names[0].endswith("-smoke-stock")
    assert not list(results.glob(".tmp-*"))
    for pid, path in written.items():  # each bundle holds its own run's data
        assert load_bundle(Path(path)).values("nonzero_pages", "touch", "stock") == [pid]
        assert load_bundle(Path(path)).status == "complete"
