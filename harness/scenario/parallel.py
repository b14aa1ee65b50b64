"""Running a run's repetitions: one guest at a time, or under icount several guests at once (`--jobs N`).

Under icount a guest's timings are its own instruction counts, so other guests on the host do not change
them; realtime timings are host time and always run one guest at a time.  Whichever way they run, the
bundle is written as a serial run writes it: every repetition's metric rows go in together, in the planned
order (manifest `rep_order`), so a `--jobs 2` bundle differs from a `--jobs 1` one only in what was measured.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.markup import escape

QEMU_OVERHEAD_MIB = 384  # a TCG QEMU beside its guest's RAM: translation buffer, device state, libraries


@dataclass(frozen=True)
class PlannedRep:
    index: int  # the kernel's position in the run
    kernel: str  # its spec
    rep: int


def plan_order(kernels: list[str], reps: int) -> list[PlannedRep]:
    """Repetition-major order, reversed every other repetition (A B, B A, ...), so slow drift on the host
    and a kernel's position after another affect every kernel alike."""
    order = []
    for rep in range(1, reps + 1):
        row = [PlannedRep(i, k, rep) for i, k in enumerate(kernels)]
        order += row if rep % 2 else row[::-1]
    return order


def _mem_available_mib(meminfo: str | None = None) -> int:
    text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def host_jobs(memory_mib: int, meminfo: str | None = None, cores: int | None = None) -> int:
    """How many icount guests of `memory_mib` this host runs at once: one per core (an icount guest runs
    all its vCPUs on one host thread), as many as its available memory holds; at least one."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    by_memory = _mem_available_mib(meminfo) // (memory_mib + QEMU_OVERHEAD_MIB)
    return max(1, min(cores, by_memory))


def choose_jobs(requested: int | None, timing: str, memory_mib: int, planned: int) -> tuple[int, str | None]:
    """Guests at once, and a line to print when the request cannot be honoured."""
    if timing != "icount":
        if requested is not None and requested > 1:
            return 1, (f"--jobs {requested} ignored: realtime timings are host time, so guests run one at a time "
                       "(--timing icount runs them in parallel)")
        return 1, None
    jobs = requested if requested is not None else host_jobs(memory_mib)
    return max(1, min(jobs, planned)), None


class Tagged:
    """A console or progress display whose lines and tasks say which guest they are about."""

    def __init__(self, target, tag: str):
        self._target = target
        self._tag = escape(f"[{tag}]")

    def print(self, *objects, **kwargs) -> None:
        if objects and isinstance(objects[0], str):
            objects = (f"[dim]{self._tag}[/] {objects[0].lstrip()}", *objects[1:])
        self._target.print(*objects, **kwargs)

    def add_task(self, description: str, *args, **kwargs):
        return self._target.add_task(f"{self._tag} {description}", *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._target, name)


class Repetition(Protocol):
    def run(self) -> Any: ...

    def abort(self) -> None:
        """From another thread: stop the guest now."""


@dataclass
class RepOutcome:
    planned: PlannedRep
    runner: Any = None  # the Repetition (a RepRunner), once it started
    error: BaseException | None = None
    aborted: bool = False  # stopped by us because another repetition failed or the run was interrupted
    done: bool = False


@dataclass
class Scheduler:
    """Runs `start(planned).run()` for every planned repetition, `jobs` at a time; `finish(outcome)` records
    each one in the planned order.  A failure or an interruption aborts the guests still running."""

    planned: list[PlannedRep]
    jobs: int
    start: Callable[[PlannedRep], Repetition]
    finish: Callable[[RepOutcome], None]
    outcomes: list[RepOutcome] = field(default_factory=list)
    _flushed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def execute(self) -> list[Any]:
        """The repetitions' results in planned order; raises the first failure once every guest is stopped."""
        self.outcomes = [RepOutcome(p) for p in self.planned]
        if self.jobs <= 1:
            for outcome in self.outcomes:  # in this thread: Ctrl-C unwinds each VM as it always did
                outcome.runner = self.start(outcome.planned)
                try:
                    outcome.runner.run()
                except BaseException as exc:
                    outcome.error = exc
                    raise
                finally:
                    outcome.done = True
                    self._flush()
            return [o.runner for o in self.outcomes]
        return self._execute_parallel()

    def _execute_parallel(self) -> list[Any]:
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="guest") as pool:
            pending: set[Future] = {pool.submit(self._work, o) for o in self.outcomes}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    failed = [e for f in done if not f.cancelled() and (e := f.result()) is not None]
                    self._flush()
                    if failed and first_error is None:
                        first_error = failed[0]
                        self._stop_all(pending)
            except BaseException:  # Ctrl-C (or SIGTERM) in this thread: stop every guest, then unwind
                self._stop_all(pending)
                wait(pending)
                self._flush()
                raise
        self._flush()
        if first_error is not None:
            raise first_error
        return [o.runner for o in self.outcomes]

    def _work(self, outcome: RepOutcome) -> BaseException | None:
        try:
            with self._lock:
                if self._stop.is_set():
                    outcome.aborted = True
                    return None
                outcome.runner = self.start(outcome.planned)
            outcome.runner.run()
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread, which raises it
            with self._lock:
                aborted = self._stop.is_set()
                self._stop.set()  # no further repetition starts; the main thread aborts the running ones
            outcome.error, outcome.aborted = exc, aborted
            return None if aborted else exc
        finally:
            outcome.done = True
        return None

    def _stop_all(self, pending: set[Future]) -> None:
        with self._lock:
            self._stop.set()
            running = [o.runner for o in self.outcomes if o.runner is not None and not o.done]
        for f in pending:
            f.cancel()
        for runner in running:
            runner.abort()

    def _flush(self) -> None:
        """Record finished repetitions in planned order, as far as no earlier one is still running."""
        while self._flushed < len(self.outcomes):
            outcome = self.outcomes[self._flushed]
            if not outcome.done and not (outcome.runner is None and self._stop.is_set()):
                return
            if outcome.runner is not None and not outcome.aborted:
                self.finish(outcome)
            self._flushed += 1
