"""What the step functions (probe_steps, migration_steps, workload_steps) use of the repetition's runner
(harness.scenario.steps.RepRunner), so they need not import it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import Progress

from harness.guest.launch import BootKit
from harness.guest.ssh import Guest
from harness.machine.config import MachineConfig
from harness.machine.qmp import QMP
from harness.machine.rss import RssSampler
from harness.machine.vm import VM


class StepRecord(Protocol):
    data: dict
    invalid: str | None


class RepResult(Protocol):
    selftest_failures: list[str]


class StepRunner(Protocol):
    kit: BootKit
    machine: MachineConfig
    console: Console
    dir: Path
    previous_step_peak_kib: int
    progress: Progress

    @property
    def result(self) -> RepResult: ...

    @property
    def vm(self) -> VM: ...

    @property
    def ssh(self) -> Guest: ...

    @property
    def qmp(self) -> QMP: ...

    @property
    def rss(self) -> RssSampler: ...

    def metric(self, name: str, value: float, phase: str, unit: str | None = None) -> None: ...

    def follow_migration(self, ssh: Guest) -> None: ...

    def snapshot(self, phase: str) -> None: ...
