"""The parameters of the steps that move or save a running guest (`migrate`, `background_snapshot`), and what
makes a machine unable to do so, known before anything boots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from harness.machine.config import FILE_BACKENDS
from harness.machine.migration import MODES
from harness.machine.vm import run_dir_root
from harness.scenario.bounds import MiBPerS, Seconds, SecondsOrZero, SizeMiB, in_range, json_range
from harness.validation import Strict, problem

Number = int | float
POSTCOPY_PRECOPY_S = 0.3
UFFD_WP_FILESYSTEMS = ("tmpfs", "hugetlbfs")  # default precopy pass before postcopy is switched on


def _mode(value: str) -> str:
    if value not in MODES:
        raise problem(f"{value!r} is not one of {', '.join(MODES)}")
    return value


class WindowBalloon(Strict):
    """`balloon: 1G` or `balloon: {target: 1G, at_s: 5}` inside a window: set the balloon target (the guest's
    memory, as in the `balloon` step) that many seconds in, so the guest inflates while QEMU does not discard
    (postcopy, background snapshot) or discards pages the destination already holds (precopy).  The window
    does not wait for the target: a later `balloon` step to the same target does."""

    shorthand = "target"
    target_mib: SizeMiB = Field(alias="target")
    at_s: SecondsOrZero = 3


class MigrateParams(Strict):
    """`migrate: postcopy` or `migrate: {mode: postcopy, precopy_s: 0.5}`: live-migrate the running guest to a
    fresh QEMU on this host; every later step runs on the destination."""

    shorthand = "mode"
    mode: Annotated[str, AfterValidator(_mode), WithJsonSchema({"enum": list(MODES)})] = MODES[0]
    precopy_s: Annotated[Number, in_range(0, 600), json_range(0, 600)] | None = None  # postcopy: the pass before
    # Throttle the stream (precopy passes and postcopy's background push) to stretch the window in which the
    # guest runs while pages are in flight; default: unthrottled (both QEMUs are on this host).
    bandwidth_mib_s: MiBPerS | None = Field(None, alias="bandwidth")
    balloon: WindowBalloon | None = None
    timeout_s: Seconds = 300

    @model_validator(mode="after")
    def _precopy_s_for_postcopy(self) -> MigrateParams:
        if self.precopy_s is not None and self.mode != "postcopy":
            raise problem("only meaningful with mode: postcopy (a precopy migration is all precopy)", "precopy_s")
        return self

    @property
    def precopy_pass_s(self) -> float:
        return POSTCOPY_PRECOPY_S if self.precopy_s is None else self.precopy_s


class BackgroundSnapshotParams(Strict):
    """`background_snapshot`: save the running guest to a file in the private run dir with QEMU's
    background-snapshot capability, while it goes on running."""

    bandwidth_mib_s: MiBPerS | None = Field(None, alias="bandwidth")  # stretches the window
    balloon: WindowBalloon | None = None
    timeout_s: Seconds = 300


def migration_problem(memory_backend: str, mem_path: str | None) -> str | None:
    """Why a guest with this memory cannot be migrated to a second QEMU on the same host, or None."""
    if memory_backend in FILE_BACKENDS and mem_path is not None and not Path(mem_path).is_dir():
        # file-private too: a postcopy destination discards all its RAM first, and QEMU 7.2 punches that hole
        # into the file (ram_block_discard_range), under the source's not yet copied pages.
        return (f"mem_path {mem_path} is one file: the destination QEMU would map the source's own RAM file "
                "(give a directory, where each QEMU creates its own file)")
    return None


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem `path` is on (the longest mount point above it in /proc/self/mounts)."""
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    path = path.resolve()
    best, fstype = -1, None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (path == point or point in path.parents) and len(point.parts) > best:
            best, fstype = len(point.parts), fields[2]
    return fstype


def background_snapshot_problem(memory_backend: str, mem_path: str | None) -> str | None:
    """Why QEMU cannot take a background snapshot of a guest with this memory, or None.

    It write-protects guest RAM with userfaultfd, which Linux allows on anonymous memory, shmem (tmpfs,
    memfd) and hugetlbfs, not on a file of a disk filesystem (QEMU: "Background-snapshot is not compatible
    with guest memory configuration")."""
    if memory_backend not in FILE_BACKENDS:
        return None
    where = Path(mem_path) if mem_path else run_dir_root()
    fstype = filesystem_type(where if where.exists() else where.parent)
    if fstype not in UFFD_WP_FILESYSTEMS:
        return (f"memory_backend {memory_backend} puts guest RAM in {where} on {fstype or 'an unknown filesystem'}, "
                f"where userfaultfd cannot write-protect it (give a mem_path on {' or '.join(UFFD_WP_FILESYSTEMS)})")
    return None
