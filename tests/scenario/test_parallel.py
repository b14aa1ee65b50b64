"""How repetitions are scheduled: the planned order, how many guests at once, and the bundle written in the
planned order whatever order the guests finished in.  (The real-guest proof is tests/commands/test_jobs_vm.py.)"""

from __future__ import annotations

import threading
import time

import pytest
from rich.console import Console

from harness.scenario.parallel import PlannedRep, Scheduler, Tagged, choose_jobs, host_jobs, plan_order

MEMINFO = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:    {} kB\n"


def test_plan_order_alternates_the_kernels_every_other_repetition():
    order = [(p.kernel, p.rep) for p in plan_order(["A", "B"], 3)]
    assert order == [("A", 1), ("B", 1), ("B", 2), ("A", 2), ("A", 3), ("B", 3)]


def test_host_jobs_is_bounded_by_cores_and_by_memory():
    assert host_jobs(1024, MEMINFO.format(20 * 1024 * 1024), cores=2) == 2
    assert host_jobs(1024, MEMINFO.format(20 * 1024 * 1024), cores=16) == 14  # 20 GiB / (1 GiB + QEMU)
    assert host_jobs(8192, MEMINFO.format(4 * 1024 * 1024), cores=16) == 1  # never none


def test_realtime_runs_one_guest_at_a_time_and_says_so_when_asked_for_more():
    assert choose_jobs(None, "realtime", 512, 6) == (1, None)
    jobs, note = choose_jobs(4, "realtime", 512, 6)
    assert jobs == 1 and note and "--jobs 4 ignored" in note and "one at a time" in note


def test_icount_runs_as_many_as_asked_but_no_more_than_there_are_repetitions():
    assert choose_jobs(3, "icount", 512, 6) == (3, None)
    assert choose_jobs(8, "icount", 512, 2) == (2, None)
    jobs, _ = choose_jobs(None, "icount", 512, 100)
    assert jobs >= 1


class FakeRep:
    """A repetition that takes `seconds`, or fails, or runs until aborted."""

    def __init__(self, planned: PlannedRep, seconds: float, fail: bool = False, forever: bool = False):
        self.planned, self.seconds, self.fail, self.forever = planned, seconds, fail, forever
        self.aborted = threading.Event()
        self.ran = False

    def run(self):
        if self.forever:
            assert self.aborted.wait(30), "never aborted"
            raise RuntimeError("QEMU was stopped by the harness")
        time.sleep(self.seconds)
        self.ran = True
        if self.fail:
            raise RuntimeError(f"rep {self.planned.rep} failed")
        return self

    def abort(self):
        self.aborted.set()


def scheduler(planned, jobs, make):
    started, finished = [], []

    def start(p):
        rep = make(p)
        started.append(rep)
        return rep

    s = Scheduler(planned, jobs, start=start, finish=lambda o: finished.append((o.planned.rep, o.error is not None)))
    return s, started, finished


@pytest.mark.parametrize("jobs", [1, 3])
def test_results_are_recorded_in_planned_order_whichever_guest_finishes_first(jobs):
    planned = plan_order(["A"], 4)
    # Later repetitions finish first when they run at the same time.
    s, _, finished = scheduler(planned, jobs, lambda p: FakeRep(p, 0.2 - 0.05 * p.rep))
    results = s.execute()
    assert [r.planned.rep for r in results] == [1, 2, 3, 4]
    assert finished == [(1, False), (2, False), (3, False), (4, False)]


def test_a_failing_repetition_stops_the_others_and_its_error_is_raised():
    planned = plan_order(["A"], 6)
    second_running = threading.Event()

    class Failing(FakeRep):
        def run(self):
            assert second_running.wait(30)
            raise RuntimeError("rep 1 failed")

    class Forever(FakeRep):
        def run(self):
            second_running.set()
            return super().run()

    def make(p):
        return Failing(p, 0) if p.rep == 1 else Forever(p, 0, forever=True)

    s, started, finished = scheduler(planned, 2, make)
    with pytest.raises(RuntimeError, match="rep 1 failed"):
        s.execute()
    # rep 2 ran beside rep 1 and was aborted (not recorded: it was cut off, not measured); no later one started.
    assert [r.planned.rep for r in started] == [1, 2]
    assert started[1].aborted.is_set()
    assert finished == [(1, True)]


def test_tagged_lines_and_tasks_name_their_guest():
    console = Console(record=True, width=200)
    Tagged(console, "base+x rep 2").print("  touch: memtouch 64 MiB")
    assert console.export_text().strip() == "[base+x rep 2] touch: memtouch 64 MiB"

    class Progress:
        def add_task(self, description, **kwargs):
            return description

    assert Tagged(Progress(), "stock rep 1").add_task("boot stock", total=None) == "\\[stock rep 1] boot stock"
