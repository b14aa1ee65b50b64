"""The parameters of the simple step kinds (those that hold no other step), each validated where it is written:
sizes, durations and counts in range, a balloon target that leaves the guest room.  Steps that move or save the
guest are in migration_params.py; the scenario file itself, and `zeroing_paths` (which wraps a step), in
schema.py."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from harness.scenario.bounds import Iterations, ProbeSeconds, Seconds, SecondsOrZero, SizeMiB
from harness.validation import Strict, matching, one_of, problem

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# memtouch's ways to fault pages in: MADV_POPULATE_WRITE (the default) or a user-space store per page.
FAULT_MODES = ("populate", "store")
# faultscale's mappings: private anonymous (will-it-scale page_fault1) or a private tmpfs file (page_fault2).
FAULT_SCALE_MAPPINGS = ("anon", "file")
FAULT_SCALE_TASKS = ("processes", "threads")
MIN_BALLOON_TARGET_MIB = 128
SELFTEST_SUITES = ("mm",)

FaultMode = Annotated[str, AfterValidator(one_of(FAULT_MODES)), WithJsonSchema({"enum": list(FAULT_MODES)})]
FaultScaleMapping = Annotated[str, AfterValidator(one_of(FAULT_SCALE_MAPPINGS)),
                              WithJsonSchema({"enum": list(FAULT_SCALE_MAPPINGS)})]
FaultScaleTasks = Annotated[str, AfterValidator(one_of(FAULT_SCALE_TASKS)),
                            WithJsonSchema({"enum": list(FAULT_SCALE_TASKS)})]


class BootParams(Strict):
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data not in (None, {}):
            raise problem("takes no parameters")
        return data


class BalloonParams(Strict):
    shorthand = "target"
    target_mib: SizeMiB = Field(alias="target")
    timeout_s: Seconds = 300

    @model_validator(mode="after")
    def _leaves_room(self) -> BalloonParams:
        if self.target_mib < MIN_BALLOON_TARGET_MIB:
            raise problem(f"{self.target_mib} MiB would leave the guest too little memory to run "
                          f"(at least {MIN_BALLOON_TARGET_MIB}M)", "target")
        return self


class MemdirtyParams(Strict):
    shorthand = "size"
    size_mib: SizeMiB = Field(alias="size")
    thp: bool = False


class MemtouchParams(MemdirtyParams):
    fault: FaultMode = FAULT_MODES[0]


class FaultScaleParams(Strict):
    """will-it-scale's page_fault1 (anon) / page_fault2 (file): workers map, write one byte per page, unmap."""

    shorthand = "mapping"
    mapping: FaultScaleMapping = FAULT_SCALE_MAPPINGS[0]
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    tasks: FaultScaleTasks = FAULT_SCALE_TASKS[0]
    seconds: ProbeSeconds = 3  # guest time each worker loops for
    region_mib: SizeMiB = Field(128, alias="region")  # mapped, faulted and unmapped per operation loop

    @property
    def resident_mib(self) -> int:
        """Guest memory the step holds at once: each worker's region, and in file mode its tmpfs file too."""
        return self.workers * self.region_mib * (2 if self.mapping == "file" else 1)


class WaitReportingParams(Strict):
    timeout_s: Seconds = 60
    settle_s: SecondsOrZero = 3


class SleepParams(Strict):
    shorthand = "seconds"
    seconds: SecondsOrZero


class SnapshotParams(Strict):
    pass


class ContigBenchParams(Strict):
    shorthand = "iterations"
    iterations: Iterations = 2000
    order: Annotated[int, Field(ge=0, le=10)] = 9


class KernelZeroScanParams(Strict):
    """`kernel_zero_scan`: the guest kernel allocates __GFP_ZERO blocks of orders 0 to 10 until free memory is
    down to `reserve`, and every page that is not zero is a leak, as in memtouch (kernel_patches/modules/)."""

    shorthand = "reserve"
    reserve_mib: SizeMiB = Field(64, alias="reserve")


class ShellParams(Strict):
    shorthand = "command"
    command: Annotated[str, Field(min_length=1)]
    timeout_s: Seconds = 60


class UploadParams(Strict):
    """Copy a host file into the running guest over SSH (checked by size and sha256 there)."""

    src: Annotated[str, Field(min_length=1)]  # relative to the scenario file's directory
    dest: Annotated[str, Field(pattern=r"^/")]
    mode: Annotated[str, Field(pattern=r"^[0-7]{3,4}$")] = "755"


class StressParams(Strict):
    """For `seconds`: memdirty and memtouch loop in the guest while the host moves the balloon between
    `balloon_low` and the full guest memory every `balloon_period_s` (free page reporting runs meanwhile)."""

    seconds: Seconds
    memdirty_mib: SizeMiB = Field(alias="memdirty")
    memtouch_mib: SizeMiB = Field(alias="memtouch")
    balloon_low_mib: SizeMiB = Field(alias="balloon_low")
    balloon_period_s: Seconds = 5
    thp: bool = False

    @model_validator(mode="after")
    def _leaves_room(self) -> StressParams:
        if self.balloon_low_mib < MIN_BALLOON_TARGET_MIB:
            raise problem(f"{self.balloon_low_mib} MiB would leave the guest too little memory to run "
                          f"(at least {MIN_BALLOON_TARGET_MIB}M)", "balloon_low")
        if self.memdirty_mib + self.memtouch_mib >= self.balloon_low_mib:
            raise problem(f"memdirty + memtouch ({self.memdirty_mib + self.memtouch_mib} MiB) do not fit in "
                          f"balloon_low ({self.balloon_low_mib} MiB)", "balloon_low")
        return self


class SelftestEntry(Strict):
    shorthand = "name"
    name: Annotated[str, AfterValidator(matching(NAME, "a selftest binary's name"))]
    args: str = ""
    timeout_s: Seconds | None = None  # default: the step's timeout_s
    skip: str | None = None  # a reason not to run it here: recorded as a skipped case with this reason


class KselftestParams(Strict):
    """Selected tests of the kernel's own tools/testing/selftests/mm, built statically from its source tree."""

    shorthand = "tests"
    suite: Annotated[str, AfterValidator(one_of(SELFTEST_SUITES)),
                     WithJsonSchema({"enum": list(SELFTEST_SUITES)})] = "mm"
    tests: Annotated[list[SelftestEntry], Field(min_length=1)]
    timeout_s: Seconds = 300

    @model_validator(mode="after")
    def _each_once(self) -> KselftestParams:
        names = [t.name for t in self.tests]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise problem(f"{', '.join(twice)} named twice", "tests")
        return self
