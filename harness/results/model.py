"""The result bundle's records, one typed model for writing and reading (results/README.md says the same).

A bundle directory holds ``manifest.json`` (:class:`Manifest`), ``metrics.json`` (a list of
:class:`MetricRow`) and ``expectations.json`` (a list of :class:`ExpectationRow`).  Fields added to
schema 1 after its first bundles were written (``timing``, a kernel's ``series[].of``, ...) are optional,
so every schema-1 bundle on disk still reads; keys this model does not know are kept, not refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, Strict, field_validator

from harness.kernels.record import KernelRecord, PatchRecord, Record, SeriesRecord
from harness.results.metrics import definition

SCHEMA = 1
__all__ = ["KernelRecord", "PatchRecord", "Record", "SeriesRecord"]  # defined with the kernels, recorded here


class ScenarioRecord(Record):
    name: str
    path: str | None = None
    content: str | None = None  # the scenario file's text


class QemuRecord(Record):
    version: str | None = None
    binary: str | None = None
    argv: list[str] | None = None  # of the first boot


class HostRecord(Record):
    cpu: str | None = None
    cores: int | None = None
    memory_mib: int | None = None
    kernel: str | None = None
    hostname: str | None = None


class HarnessRecord(Record):
    version: str | None = None
    git_commit: str | None = None  # with "-dirty" when tracked files had changes


class Manifest(Record):
    """manifest.json: what ran, where, and how it ended."""

    schema_version: int = Field(SCHEMA, alias="schema")
    status: str = "running"  # "running" only while the bundle is being written
    error: str | None = None
    scenario: ScenarioRecord | str | None = None  # a bare name in the earliest bundles
    kernels: list[KernelRecord] = []
    qemu: QemuRecord | None = None
    accel: str | None = None
    timing: str | None = None  # "realtime" or "icount"; null (bundles before timing modes) means realtime
    host: HostRecord | None = None
    harness: HarnessRecord | None = None
    started: str | None = None
    ended: str | None = None
    reps: int | None = None
    # Repetitions in their planned order ([{kernel, rep, from}]; from: "boot", or "snapshot" when it started from
    # the kernel's saved boot), and how many guests ran at once (icount only).
    rep_order: list[dict[str, Any]] | None = None
    # The machine every kernel ran on, as the run resolved it (harness.machine.config.MachineConfig: memory, vCPUs,
    # command line, backend, balloon options, timing); null in bundles before it was recorded.
    machine: dict[str, Any] | None = None
    repetitions_from: str | None = None  # "boot" or "snapshot" (harness.scenario.saved_boot); null in older bundles
    jobs: int | None = None

    @property
    def scenario_name(self) -> str:
        sc = self.scenario
        return str((sc.name if isinstance(sc, ScenarioRecord) else sc) or "unknown")


Number = Annotated[int, Strict()] | Annotated[float, Strict()]  # never a bool or a numeric string


class MetricRow(Record):
    """One measurement: a metric of one kernel in one phase of one repetition."""

    name: Annotated[str, Strict()]
    value: Number
    unit: str | None = None
    phase: str | None = None
    rep: int | None = None
    kernel: str  # the kernel's spec (older bundles: its slug)

    @field_validator("kernel", mode="before")
    @classmethod
    def _kernel_text(cls, v: Any) -> Any:
        return v if v is None or isinstance(v, str) else str(v)

    @classmethod
    def measured(cls, name: str, value: float, *, phase: str, rep: int, kernel: str,
                 unit: str | None = None) -> MetricRow:
        """A row with the metric's defined unit unless one is given."""
        return cls(name=name, value=value, unit=unit if unit is not None else definition(name).unit,
                   phase=phase, rep=rep, kernel=kernel)


class ExpectationRow(Record):
    name: str
    kernel: str | None = None  # None: the check is about the whole run
    ok: Annotated[bool, Strict()]
    detail: str = ""
