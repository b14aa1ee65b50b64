"""Where a scenario run puts what it measures.  The result bundle (harness.results.writer) is the one
implementation; the scenario layer only knows this interface, so it never imports the results layer."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class MetricValues(Protocol):
    def values(self, name: str, phase: str | None = None, kernel: str | None = None) -> list[float]: ...


class RunSink(MetricValues, Protocol):
    def rep_dir(self, kernel_slug: str, rep: int) -> Path: ...

    def add_metric(self, name: str, value: float, *, phase: str, rep: int, kernel: str,
                   unit: str | None = None) -> None: ...

    def set_environment(self, *, accel: str, timing: str, qemu_version: str, qemu_binary: str) -> None: ...

    def add_kernel(self, record: dict) -> None: ...

    def update_kernel(self, index: int, *, zeroing_counters: str | None, guest_release: str | None,
                      qemu_argv: list[str], clocksource: str | None = None, zeroing: dict | None = None) -> None: ...

    def set_expectations(self, rows: list[dict]) -> None: ...
