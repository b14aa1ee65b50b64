"""Scenario files (YAML): what guest to boot, how QEMU backs it, and the steps and expectations.

Validation happens entirely at load time, so a bad file fails in a second with one message naming
the file, the key and what is wrong -- never half-way through a boot.  The file's shape is the
pydantic model `ScenarioFile`; `harness.scenario.json_schema` exports it for editors (`harness schema`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    Field,
    WithJsonSchema,
    model_validator,
)

from harness.errors import InputError
from harness.guest.overlay import DEFAULT_DEST_DIR, overlay_files
from harness.guest.zeroing import METHODS as ZEROING_METHODS
from harness.kernels.spec import STOCK, KernelSpec, KernelSpecField
from harness.machine.config import BACKENDS, FILE_BACKENDS, MACHINE_TYPES, TIMING_MODES, MachineConfig
from harness.scenario.bounds import (
    MAX_MIB,
    IntervalS,
    Repetitions,
    SizeMiB,
)
from harness.scenario.expectation_models import Expectations, check_expectation_phases
from harness.scenario.migration_params import (
    BackgroundSnapshotParams,
    MigrateParams,
    background_snapshot_problem,
    migration_problem,
)
from harness.scenario.saved_boot import FROM_BOOT, FROM_SNAPSHOT, REPETITIONS_FROM
from harness.scenario.step_params import (
    MIN_BALLOON_TARGET_MIB,
    NAME,
    BalloonParams,
    BootParams,
    ContigBenchParams,
    FaultScaleParams,
    KernelZeroScanParams,
    KselftestParams,
    MemdirtyParams,
    MemtouchParams,
    ShellParams,
    SleepParams,
    SnapshotParams,
    StressParams,
    UploadParams,
    WaitReportingParams,
)
from harness.validation import Strict, matching, one_of, problem, validate
from harness.yamlfile import DuplicateKeyError, describe_error, parse_yaml

PHASE = re.compile(r"^[A-Za-z0-9_-]+$")
MIN_GUEST_MIB = 256
BOOT_PHASE = "boot"  # the phase of boot_to_ssh_s, whatever the boot step's own phase


RepetitionsFrom = Annotated[str, AfterValidator(one_of(REPETITIONS_FROM)),
                           WithJsonSchema({"enum": list(REPETITIONS_FROM)})]
Backend = Annotated[str, AfterValidator(one_of(BACKENDS)), WithJsonSchema({"enum": list(BACKENDS)})]
Timing = Annotated[str, AfterValidator(one_of(TIMING_MODES)), WithJsonSchema({"enum": list(TIMING_MODES)})]
MachineType = Annotated[str, AfterValidator(one_of(MACHINE_TYPES)), WithJsonSchema({"enum": list(MACHINE_TYPES)})]
ZeroingMethod = Annotated[str, AfterValidator(one_of(ZEROING_METHODS)), WithJsonSchema({"enum": list(ZEROING_METHODS)})]
ScenarioName = Annotated[str, AfterValidator(matching(NAME, "letters, digits, '.', '_' or '-'")),
                         WithJsonSchema({"type": "string", "pattern": NAME.pattern})]
PhaseName = Annotated[str, AfterValidator(matching(PHASE, "letters, digits, '_' or '-'")),
                      WithJsonSchema({"type": "string", "pattern": PHASE.pattern})]


class BalloonOptions(Strict):
    free_page_reporting: bool = True
    deflate_on_oom: bool = False
    stats_interval_s: IntervalS = 0  # 0: the guest sends no statistics


class QemuOptions(Strict):
    memory_backend: Backend = "ram"
    prealloc: bool = False
    mem_lock: bool = False
    mem_path: str | None = None  # file backends: a directory or file path (default: the private run dir)
    balloon: BalloonOptions = BalloonOptions()
    timing: Timing = "realtime"
    machine: MachineType = "q35"

    @model_validator(mode="after")
    def _mem_path_needs_file(self) -> QemuOptions:
        if self.mem_path is not None and self.memory_backend not in FILE_BACKENDS:
            raise problem(f"only meaningful with memory_backend: {' or '.join(FILE_BACKENDS)}", "mem_path")
        return self


class GuestFile(Strict):
    """A host file or directory added to the guest image (`- ./hello` puts it in /usr/local/bin)."""

    shorthand = "src"
    src: Annotated[str, Field(min_length=1)]  # relative to the scenario file's directory
    dest: str | None = None  # guest path (default /usr/local/bin/<name>); a directory's files go below it


class GuestOptions(Strict):
    memory_mib: SizeMiB = Field(2048, alias="memory")
    cpus: Annotated[int, Field(ge=1, le=64)] = 2
    cmdline: str = ""
    zeroing: ZeroingMethod = "auto"  # how zeroing is counted (harness.guest.zeroing)
    files: list[GuestFile] = []

    @model_validator(mode="after")
    def _bounds(self) -> GuestOptions:
        if self.memory_mib < MIN_GUEST_MIB:
            raise problem(f"{self.memory_mib} MiB is too small to boot a guest (at least {MIN_GUEST_MIB}M)",
                          "memory")
        if self.memory_mib > MAX_MIB:
            raise problem(f"{self.memory_mib} MiB is more than a guest can have here (at most {MAX_MIB // 1024}G)",
                          "memory")
        return self


# -- step parameters: each step kind's own model; a bare scalar means the shorthand key ----------------
class ZeroingPathsParams(Strict):
    """`zeroing_paths: {memtouch: {size: 256M}}`: run that one step (its metrics as usual) and break the zeroing
    it caused down by path (needs the zeroing-sources series; harness.guest.zeroing_paths)."""

    step: StepEntry

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str | dict) and data != {} and not (isinstance(data, dict) and "step" in data):
            return {"step": data}
        return data

    @model_validator(mode="after")
    def _one_plain_step(self) -> ZeroingPathsParams:
        if self.step.kind in ("boot", "zeroing_paths"):
            raise problem(f"breaks down the zeroing of another kind of step, not {self.step.kind}", "step")
        if self.step.phase is not None:
            raise problem("the phase goes on the zeroing_paths step, not inside it", "step", "phase")
        return self


StepParams = (BootParams | BalloonParams | MemdirtyParams | MemtouchParams | WaitReportingParams | SleepParams
              | SnapshotParams | ContigBenchParams | ShellParams | ZeroingPathsParams | UploadParams
              | KselftestParams | StressParams | FaultScaleParams | KernelZeroScanParams
              | MigrateParams | BackgroundSnapshotParams)
STEP_PARAMS: dict[str, type[Strict]] = {
    "boot": BootParams, "balloon": BalloonParams, "memdirty": MemdirtyParams, "memtouch": MemtouchParams,
    "wait_reporting": WaitReportingParams, "sleep": SleepParams, "snapshot": SnapshotParams,
    "contig_bench": ContigBenchParams, "shell": ShellParams, "zeroing_paths": ZeroingPathsParams,
    "upload": UploadParams, "kselftest": KselftestParams, "stress": StressParams,
    "fault_scale": FaultScaleParams, "kernel_zero_scan": KernelZeroScanParams,
    "migrate": MigrateParams, "background_snapshot": BackgroundSnapshotParams,
}
STEP_TYPES = tuple(STEP_PARAMS)


class StepEntry(Strict):
    """One item of `steps:` as written: `- KIND: PARAMS` (or just `- KIND`), optionally with `phase:`."""

    phase: PhaseName | None = None
    boot: BootParams | None = None
    balloon: BalloonParams | None = None
    memdirty: MemdirtyParams | None = None
    memtouch: MemtouchParams | None = None
    fault_scale: FaultScaleParams | None = None
    wait_reporting: WaitReportingParams | None = None
    sleep: SleepParams | None = None
    snapshot: SnapshotParams | None = None
    contig_bench: ContigBenchParams | None = None
    kernel_zero_scan: KernelZeroScanParams | None = None
    shell: ShellParams | None = None
    zeroing_paths: ZeroingPathsParams | None = None
    upload: UploadParams | None = None
    kselftest: KselftestParams | None = None
    stress: StressParams | None = None
    migrate: MigrateParams | None = None
    background_snapshot: BackgroundSnapshotParams | None = None

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {data: None}
        if not isinstance(data, dict):
            raise problem(f"expected a step like '- memtouch: 256M', got {data!r}")
        kinds = [k for k in data if k != "phase"]
        if len(kinds) != 1 or kinds[0] not in STEP_TYPES:
            raise problem(f"a step has exactly one of {', '.join(STEP_TYPES)} (and optionally phase), "
                          f"got {list(data)}")
        # A kind written without parameters still names the step: its model validates an empty mapping.
        return {**data, kinds[0]: {} if data[kinds[0]] is None else data[kinds[0]]}

    @property
    def kind(self) -> str:
        return next(k for k in STEP_TYPES if getattr(self, k) is not None)

    @property
    def params(self) -> Strict:
        return getattr(self, self.kind)

    @property
    def measured(self) -> StepEntry:
        """The step that runs: this one, or the one a zeroing_paths step wraps."""
        p = self.params
        return p.step if isinstance(p, ZeroingPathsParams) else self


ZeroingPathsParams.model_rebuild()


class ScenarioFile(Strict):
    """A scenario file as written."""

    name: ScenarioName
    description: str = ""
    guest: GuestOptions = GuestOptions()
    qemu: QemuOptions = QemuOptions()
    kernels: Annotated[list[KernelSpecField], Field(min_length=1)] = Field(
        default_factory=lambda: [STOCK])
    repetitions: Repetitions = 1
    # snapshot: boot each kernel once, save the booted guest, and start every later repetition from it
    # None: from a snapshot, unless a boot step measures the boot (then every repetition boots)
    repetitions_from: RepetitionsFrom | None = None
    steps: Annotated[list[StepEntry], Field(min_length=1)]
    expect: Expectations = Expectations()

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not data:
            raise problem("the scenario is empty")
        return data

    @model_validator(mode="after")
    def _steps_fit_the_guest(self) -> ScenarioFile:
        memory = self.guest.memory_mib
        phases: list[str] = []
        for i, entry in enumerate(self.steps):
            kind, p = entry.measured.kind, entry.measured.params
            at = ("steps", i, kind) if entry.measured is entry else ("steps", i, "zeroing_paths", "step", kind)
            if kind == "boot" and i != 0:
                raise problem("boot can only be the first step (every repetition starts with a fresh boot)",
                              "steps", i)
            if kind == "boot" and self.repetitions_from == FROM_SNAPSHOT:
                raise problem("a boot step measures the boot, which repetitions from a saved boot skip: "
                              f"use repetitions_from: {FROM_BOOT} (the file's key or --repetitions-from)", "steps", i)
            phase = entry.phase or f"{kind}{i}"
            if phase in phases:
                raise problem(f"phase {phase!r} is used twice", "steps", i, "phase")
            phases.append(phase)
            if isinstance(p, BalloonParams) and p.target_mib > memory:
                raise problem(f"{p.target_mib} MiB is above the guest memory ({memory} MiB)",
                              *at, "target")
            window = p.balloon if isinstance(p, MigrateParams | BackgroundSnapshotParams) else None
            if window is not None and not MIN_BALLOON_TARGET_MIB <= window.target_mib <= memory:
                raise problem(f"{window.target_mib} MiB is not between {MIN_BALLOON_TARGET_MIB} MiB and the guest "
                              f"memory ({memory} MiB)", *at, "balloon", "target")
            if isinstance(p, StressParams) and p.balloon_low_mib >= memory:
                raise problem(f"{p.balloon_low_mib} MiB is not below the guest memory ({memory} MiB)",
                              *at, "balloon_low")
            if isinstance(p, KernelZeroScanParams) and p.reserve_mib >= memory:
                raise problem(f"a reserve of {p.reserve_mib} MiB leaves nothing to scan in the guest's {memory} MiB",
                              *at, "reserve")
            if isinstance(p, MemdirtyParams) and p.size_mib >= memory:
                raise problem(f"{p.size_mib} MiB does not fit in the guest's {memory} MiB", *at, "size")
            if isinstance(p, MigrateParams) and (why := migration_problem(self.qemu.memory_backend,
                                                                          self.qemu.mem_path)):
                raise problem(f"this machine cannot be migrated: {why}", *at)
            if isinstance(p, BackgroundSnapshotParams) and (why := background_snapshot_problem(
                    self.qemu.memory_backend, self.qemu.mem_path)):
                raise problem(f"QEMU cannot take a background snapshot of this machine: {why}", *at)
            if isinstance(p, FaultScaleParams) and p.resident_mib >= memory:
                raise problem(f"{p.workers} worker(s) x {p.region_mib} MiB"
                              + (" (and a tmpfs file each)" if p.mapping == "file" else "")
                              + f" do not fit in the guest's {memory} MiB", *at, "region")
        check_expectation_phases(self.expect, [*phases, BOOT_PHASE])
        return self


@dataclass(frozen=True)
class Step:
    kind: str
    phase: str
    params: Any  # the kind's parameter model (BalloonParams, MemtouchParams, ...)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    content: str
    description: str
    guest: GuestOptions
    qemu: QemuOptions
    kernels: list[KernelSpec]
    repetitions: int
    steps: list[Step]
    expect: Expectations = field(default_factory=Expectations)
    repetitions_from: str = FROM_BOOT  # or FROM_SNAPSHOT (harness.scenario.saved_boot)
    files: dict[str, Path] = field(default_factory=dict)  # guest path -> host file, added to the image

    @property
    def mm_selftests(self) -> tuple[str, ...]:
        """Every mm selftest a kselftest step runs (built from each kernel's tree, put in its image)."""
        names: list[str] = []
        for step in self.steps:
            if isinstance(step.params, KselftestParams):
                names += [t.name for t in step.params.tests if t.skip is None and t.name not in names]
        return tuple(names)

    def machine(self) -> MachineConfig:
        """The guest machine this scenario describes, for the QEMU layer."""
        g, q = self.guest, self.qemu
        return MachineConfig(memory_mib=g.memory_mib, cpus=g.cpus, cmdline=g.cmdline, memory_backend=q.memory_backend,
                             prealloc=q.prealloc, mem_lock=q.mem_lock, mem_path=q.mem_path,
                             free_page_reporting=q.balloon.free_page_reporting,
                             deflate_on_oom=q.balloon.deflate_on_oom, stats_interval_s=q.balloon.stats_interval_s,
                             timing=q.timing, machine_type=q.machine)


class ScenarioOverrides(Strict):
    """Command-line values that replace the scenario file's own (--timing, --repetitions-from, --reps).  They
    are put into the file's data before it is validated, so the scenario is checked once, as one model: a
    --repetitions-from snapshot on a scenario with a boot step is refused as the same key in the file is."""

    timing: Timing | None = Field(None, alias="--timing")
    repetitions_from: RepetitionsFrom | None = Field(None, alias="--repetitions-from")
    repetitions: Repetitions | None = Field(None, alias="--reps")

    def apply(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # the file's own problem, reported by its model
        data = dict(data)
        if self.timing is not None:
            qemu = data.get("qemu")
            data["qemu"] = {**(qemu if isinstance(qemu, dict) else {}), "timing": self.timing}
        if self.repetitions_from is not None:
            data["repetitions_from"] = self.repetitions_from
        if self.repetitions is not None:
            data["repetitions"] = self.repetitions
        return data


def load_scenario(path: str | Path, overrides: ScenarioOverrides | None = None) -> Scenario:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such scenario file")
    content = path.read_text()
    try:
        data = parse_yaml(content)
    except DuplicateKeyError as exc:
        raise InputError(f"{path}: {describe_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed YAML: {describe_error(exc)}") from None
    if overrides is not None:
        data = overrides.apply(data)
    return parse_scenario(data, path, content)


def parse_scenario(data: Any, path: Path, content: str = "") -> Scenario:
    f = validate(ScenarioFile, data, path)
    steps = [Step(e.kind, e.phase or f"{e.measured.kind}{i}", e.params) for i, e in enumerate(f.steps)]
    here = path.parent
    files: dict[str, Path] = {}
    for i, gf in enumerate(f.guest.files):
        src = (here / gf.src).resolve()
        dest = gf.dest or f"{DEFAULT_DEST_DIR}/{src.name}"
        files.update(overlay_files(src, dest, f"{path}: guest.files[{i}]"))
    for i, e in enumerate(f.steps):
        if isinstance(e.params, UploadParams):
            src = here / e.params.src
            overlay_files(src, e.params.dest, f"{path}: steps[{i}].upload")
            if not src.is_file():
                raise InputError(f"{path}: steps[{i}].upload: {src} is not a file (upload copies one file)")
            steps[i] = Step(e.kind, steps[i].phase, e.params.model_copy(update={"src": str(src.resolve())}))
    return Scenario(name=f.name, path=path, content=content, description=f.description, guest=f.guest, qemu=f.qemu,
                    kernels=list(f.kernels), repetitions=f.repetitions, steps=steps,
                    expect=f.expect, files=files,
                    repetitions_from=f.repetitions_from or (
                        FROM_BOOT if any(s.kind == "boot" for s in steps) else FROM_SNAPSHOT))
