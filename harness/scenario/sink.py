"""Where a scenario run puts what it measures.  The result bundle (harness.results.writer) is the one
implementation; the scenario layer only knows this interface, so it never imports the results layer."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from harness.kernels.record import KernelRecord


class MetricValues(Protocol):
    def values(self, name: str, phase: str | None = None, kernel: str | None = None) -> list[float]: ...


class MetricSink(Protocol):
    """What one repetition writes: its directory and its metric rows."""

    def rep_dir(self, kernel_slug: str, rep: int) -> Path: ...

    def add_metric(self, name: str, value: float, *, phase: str, rep: int, kernel: str,
                   unit: str | None = None) -> None: ...


class RunSink(MetricSink, MetricValues, Protocol):
    def set_environment(self, *, accel: str, timing: str, qemu_version: str, qemu_binary: str,
                        machine: dict | None = None) -> None: ...

    def set_schedule(self, *, jobs: int, order: list[dict]) -> None: ...

    def add_kernel(self, record: KernelRecord) -> None: ...

    def update_kernel(self, index: int, *, zeroing_counters: str | None, guest_release: str | None,
                      qemu_argv: list[str], clocksource: str | None = None, zeroing: dict | None = None) -> None: ...

    def set_expectations(self, rows: list[dict]) -> None: ...


class BufferedSink:
    """One repetition's metric rows, held until :meth:`flush` adds them to the run's sink: repetitions that
    ran at the same time still land in the bundle one after the other, in the planned order."""

    def __init__(self, sink: MetricSink):
        self._sink = sink
        self._rows: list[tuple[tuple, dict]] = []

    def rep_dir(self, kernel_slug: str, rep: int) -> Path:
        return self._sink.rep_dir(kernel_slug, rep)

    def add_metric(self, name: str, value: float, *, phase: str, rep: int, kernel: str,
                   unit: str | None = None) -> None:
        self._rows.append(((name, value), {"phase": phase, "rep": rep, "kernel": kernel, "unit": unit}))

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        for args, kwargs in rows:
            self._sink.add_metric(*args, **kwargs)
