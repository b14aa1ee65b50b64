"""The records of a sharded nightly: the plan (`harness plan`), one shard's record (`harness run-shard`) and
the merged directory's ``merge.json`` (`harness merge`).

A *cell* is one comparison group: one scenario on all of its kernels, run interleaved on one runner, into
one bundle.  Statistics compare kernels within a cell's bundle, so raw samples are never pooled across
runners.  A merged directory ``OUT/`` holds the shards' bundle directories unchanged plus ``merge.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from harness.errors import InputError
from harness.kernels.spec import KernelSpecField
from harness.results.model import HostRecord, Manifest, Record

PLAN_SCHEMA = 1
SHARD_FILE = "shard.json"
MERGE_FILE = "merge.json"


class PlanCell(Record):
    """One comparison group of the matrix."""

    id: str  # stable: the scenario name and a hash of what the cell runs
    scenario: str  # the scenario's name
    path: str  # the scenario file, relative to the repository when inside it
    sha256: str  # of the scenario file when planned (a shard refuses a file that changed since)
    kernels: list[KernelSpecField]  # the first is the baseline
    reps: int
    timing: str | None = None  # None: the scenario's own
    aa: bool = False  # A/A calibration: one kernel, its repetitions measure the runner's noise
    estimate_s: float
    estimate_from: str  # "bundles" (median of earlier runs) or "default" (no earlier bundle)


class PlanBuild(Record):
    spec: KernelSpecField
    key: str  # the kernel build cache key


class PlanShard(Record):
    id: str
    cells: list[str]
    estimate_s: float
    kernels: list[KernelSpecField]  # every kernel its cells run
    build_keys: list[str]  # the build cache entries it needs (stock kernels have none)


class Plan(Record):
    schema_version: int = Field(PLAN_SCHEMA, alias="schema")
    matrix: str
    created: str
    shards: list[PlanShard]
    cells: list[PlanCell]
    builds: list[PlanBuild]  # every kernel to build once before the shards run
    builds_key: str  # sha256 of the sorted build keys: names the build cache the shards restore

    def cell(self, cell_id: str) -> PlanCell:
        return next(c for c in self.cells if c.id == cell_id)

    def shard(self, shard_id: str) -> PlanShard:
        for s in self.shards:
            if s.id == shard_id:
                return s
        raise InputError(f"no shard {shard_id!r} in the plan (shards: {', '.join(s.id for s in self.shards)})")

    def digest(self) -> str:
        """Identifies the plan: shards record it, merge refuses shards of different plans."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class Runner(Record):
    """The fingerprint of the machine a shard ran on."""

    cpu: str | None = None
    cores: int | None = None
    accelerator: str | None = None
    qemu_version: str | None = None
    memory_mib: int | None = None
    hostname: str | None = None
    wall_s: float | None = None  # the shard's wall time

    def same_machine(self, other: Runner) -> bool:
        return (self.cpu, self.cores, self.accelerator, self.qemu_version) == (
            other.cpu, other.cores, other.accelerator, other.qemu_version)

    @classmethod
    def of_manifest(cls, m: Manifest) -> Runner:
        host = m.host or HostRecord()
        return cls(cpu=host.cpu, cores=host.cores, accelerator=m.accel, qemu_version=m.qemu.version if m.qemu else None,
                   memory_mib=host.memory_mib, hostname=host.hostname)


class ShardCell(Record):
    id: str
    bundle: str | None  # directory name in the shard's results directory; None: the run left no bundle
    status: str  # the bundle's status, or "no bundle"
    error: str | None = None
    wall_s: float


class ShardRecord(Record):
    """``shard.json`` in a shard's results directory."""

    plan: Plan  # the whole plan, so merge needs nothing but the shards' directories
    plan_digest: str
    shard: str
    runner: Runner
    started: str
    ended: str
    wall_s: float
    cells: list[ShardCell]


class MergedCell(Record):
    id: str
    scenario: str
    kernels: list[str]
    shard: str
    bundle: str  # directory name relative to the merged directory
    aa: bool = False
    status: str


class Merge(Record):
    """``merge.json`` of a merged directory."""

    plan: Plan
    cells: list[MergedCell]
    runners: dict[str, Runner]  # shard id -> the runner it ran on
    merged_at: str
    wall_s: Annotated[float, Field(ge=0)] | None = None  # sum of the shards' wall times
    problems: list[str] = []  # infrastructure errors: planned cells missing or duplicated, shards of other plans


def read_model(path: Path, model: type[Record], what: str):
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {what} is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{path}: not a {what}: {loc or 'top level'}: {err['msg']}") from None


def write_model(path: Path, record: Record) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record.model_dump(mode="json", by_alias=True), indent=1) + "\n")
    tmp.replace(path)


def load_plan(path: Path) -> Plan:
    return read_model(Path(path), Plan, "plan (harness plan)")


def load_merge(directory: Path) -> Merge | None:
    """A merged directory's merge.json, or None for a plain directory of bundles."""
    path = Path(directory) / MERGE_FILE
    return read_model(path, Merge, "merge.json (harness merge)") if path.is_file() else None
