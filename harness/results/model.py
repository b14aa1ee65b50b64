"""The result bundle's records, one typed model for writing and reading (results/README.md says the same).

A bundle directory holds ``manifest.json`` (:class:`Manifest`), ``metrics.json`` (a list of
:class:`MetricRow`) and ``expectations.json`` (a list of :class:`ExpectationRow`).  Fields added to
schema 1 after its first bundles were written (``timing``, a kernel's ``series[].of``, ...) are optional,
so every schema-1 bundle on disk still reads; keys this model does not know are kept, not refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_serializer
from pydantic.functional_serializers import SerializerFunctionWrapHandler

from harness.results.metrics import definition

SCHEMA = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=True)


class PatchRecord(Record):
    file: str
    sha256: str | None = None


class SeriesRecord(Record):
    """A patch series as applied: every patch in order; `of` is how many the whole series has (SERIES@N)."""

    name: str
    patches: list[PatchRecord] = []
    of: int | None = None


class KernelRecord(Record):
    """One kernel of the run (manifest ``kernels[]``); fields not known for a kernel are null."""

    spec: str | None = None  # as given on the command line or in the scenario
    slug: str | None = None  # its directory name in the bundle
    version: str | None = None  # kernel release
    sha256: str | None = None  # of the bzImage
    cache_key: str | None = None  # the build cache entry (built kernels)
    config: str | None = None  # path of the .config it was built with
    config_fragment_sha256: str | None = None
    series: list[SeriesRecord] = []
    # "vmstat", "trace", "vmstat+trace" or "unavailable" ("kprobe" in older bundles); null until a boot found out
    zeroing_counters: str | None = None
    # how each zeroing.* metric was counted, and why the unavailable ones could not be (harness.guest.zeroing)
    zeroing: dict[str, Any] | None = None
    guest_release: str | None = None  # `uname -r` in the guest
    clocksource: str | None = None  # the guest's current clocksource (kvm-clock on KVM)
    # Only some kernels (and bundles) have these; written only when set.
    package: str | None = None  # stock: the Debian package
    boot: str | None = None  # stock: how QEMU boots it (the PVH vmlinux or the bzImage)
    base: dict[str, Any] | None = None  # built: the source it was built from (Debian package, or a tree)
    flavours: list[dict[str, Any]] | None = None  # built with %FLAVOURs: name, fragment sha256, boot parameters
    stack: str | None = None  # the spec started with this named stack (kernel_patches/stacks.yaml)
    expanded: str | None = None  # and stood for this spec

    def zeroing_summary(self) -> str | None:
        """One line: which method counted the zeroing.* metrics, the mem auto-init state, what could not be."""
        if self.zeroing_counters is None:
            return None
        z = self.zeroing or {}
        text = self.zeroing_counters
        state = [f"{k} {'on' if z[k] else 'off'}" for k in ("init_on_alloc", "init_on_free") if z.get(k) is not None]
        if state:
            text += f" ({', '.join(state)})"
        unavailable = z.get("unavailable") or {}
        if unavailable:
            text += "; unavailable: " + "; ".join(f"{k.removeprefix('zeroing.')}: {v}" for k, v in unavailable.items())
        return text

    @model_serializer(mode="wrap")
    def _omit_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in ("package", "boot", "base", "flavours", "zeroing", "stack", "expanded"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


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
