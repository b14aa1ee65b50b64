"""Driving virtio-balloon over QMP: targets, convergence, guest statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.machine.qmp import QMP
from harness.process import poll_until

MIB = 1 << 20
BALLOON_PATH = "/machine/peripheral/balloon0"
EVENT_WAIT_S = 0.5  # the longest a wait for the balloon goes without looking at it again


class BalloonTimeout(HarnessError):
    pass


@dataclass
class BalloonResult:
    target_mib: int
    start_mib: float
    actual_mib: float
    seconds: float
    events: int  # BALLOON_CHANGE events seen while converging


def actual_mib(qmp: QMP) -> float:
    return qmp.execute("query-balloon")["actual"] / MIB


def set_target(qmp: QMP, target_mib: int, timeout_s: float, progress=None,
               alive: Callable[[], None] = lambda: None) -> BalloonResult:
    """Ask the guest to give back (or take) memory until it has `target_mib`; wait for it.

    `alive` raises when the VM died, so a dead guest is reported as such rather than as a timeout."""
    start = actual_mib(qmp)
    first_event = qmp.event_count
    t0 = time.monotonic()
    task = None
    if progress is not None:
        task = progress.add_task(f"balloon {start:.0f} -> {target_mib} MiB", total=abs(target_mib - start) or 1)
    qmp.execute("balloon", {"value": target_mib * MIB})
    now = start

    def reached() -> bool:
        nonlocal now
        now = actual_mib(qmp)
        if task is not None:
            progress.update(task, completed=abs(now - start))
        return abs(now - target_mib) < 1 / 256  # one 4 KiB balloon page

    try:
        # Each BALLOON_CHANGE event ends the wait early; the interval bounds it when QEMU sends none.
        poll_until(reached, timeout=timeout_s, interval=EVENT_WAIT_S, alive=alive, started=t0,
                   wait=lambda s: qmp.wait_event(timeout=s),
                   on_timeout=lambda: BalloonTimeout(
                       f"balloon did not converge: target {target_mib} MiB, actual {now:.1f} MiB "
                       f"after {timeout_s:.0f} s (started at {start:.1f} MiB)"))
    finally:
        if task is not None:
            progress.remove_task(task)
    changes = [e for e in qmp.events_since(first_event) if e.get("event") == "BALLOON_CHANGE"]
    return BalloonResult(target_mib, start, now, time.monotonic() - t0, len(changes))


def enable_stats(qmp: QMP, interval_s: int) -> None:
    qmp.execute("qom-set", {"path": BALLOON_PATH, "property": "guest-stats-polling-interval", "value": interval_s})


def guest_stats(qmp: QMP) -> dict:
    return qmp.execute("qom-get", {"path": BALLOON_PATH, "property": "guest-stats"})


@dataclass
class WindowTarget:
    """A balloon target set `at_s` seconds into a migration or snapshot window, on the QEMU that runs the guest
    at that moment (the source before a postcopy switch-over, the destination after it), so the guest inflates
    or deflates while QEMU may not discard.  `tick` is called from the window's poll loop."""

    target_mib: int
    at_s: float
    start: float = field(default_factory=time.monotonic)
    sent_s: float | None = None  # when the target was set, seconds into the window

    def tick(self, qmps: Iterable[QMP | None]) -> None:
        if self.sent_s is not None or time.monotonic() - self.start < self.at_s:
            return
        for qmp in qmps:
            if qmp is not None and qmp.execute("query-status", timeout=10).get("status") == "running":
                qmp.execute("balloon", {"value": self.target_mib * MIB})
                self.sent_s = round(time.monotonic() - self.start, 3)
                return

    def check_sent(self, what: str) -> None:
        """After the window: it is a failed step if the window closed before the target was due."""
        if self.sent_s is None:
            raise HarnessError(f"the {what} ended {time.monotonic() - self.start:.1f} s in, before its balloon "
                               f"target was due at {self.at_s:g} s: the balloon never moved inside the window")
