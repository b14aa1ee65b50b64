"""Writing a result bundle: built in a hidden temp dir, renamed into place when the run ends.

The records are those of harness.results.model; results/README.md describes the format.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError
from harness.paths import REPO_ROOT
from harness.process import git
from harness.results.bundle import Bundle
from harness.results.model import (
    ExpectationRow,
    HarnessRecord,
    HostRecord,
    KernelRecord,
    Manifest,
    MetricRow,
    QemuRecord,
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def host_info() -> HostRecord:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return HostRecord(cpu=cpu, cores=os.cpu_count(), memory_mib=mem_kib // 1024, kernel=platform.release(),
                      hostname=platform.node())


def git_commit() -> str | None:
    try:
        sha = git(REPO_ROOT, "rev-parse", "HEAD").stdout.strip()
        dirty = git(REPO_ROOT, "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip()
    except HarnessError:
        return None
    return sha + ("-dirty" if dirty else "")


MAX_NAME = 160  # file names stop at 255 bytes; stacked series specs are long
_writers = itertools.count()  # tells apart the temp dirs of writers in one process


def bundle_name(stamp: str, scenario: str, kernel_slugs: list[str], n: int = 1) -> str:
    """<stamp>-<scenario>-<slug>_vs_<slug>...; when that is too long for a file name, its start and a hash.
    The `n`th run of that name in one results directory (started in the same second) ends in -<n>."""
    name = f"{stamp}-{scenario}-{'_vs_'.join(kernel_slugs)}"
    suffix = f"-{n}" if n > 1 else ""
    if len(name) + len(suffix) <= MAX_NAME:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:MAX_NAME - 11 - len(suffix)]}-{digest}{suffix}"


def rename_unique(src: Path, name: Callable[[int], str]) -> Path:
    """Rename directory `src` to the first free `name(n)` (n = 1, 2, ...) beside it, never over another run's
    bundle: two runs started in the same second into one results directory both keep theirs."""
    for n in itertools.count(1):
        dest = src.parent / name(n)
        if dest.exists():
            continue
        try:
            src.rename(dest)  # onto a non-empty directory (another run's, renamed since) fails: try the next
            return dest
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise AssertionError("unreachable")


class BundleWriter:
    """A bundle being written by a run (the scenario layer's RunSink): built in `path`, a hidden
    ``.tmp-*`` directory, and renamed to its bundle name by :meth:`finish` (the first one free then)."""

    def __init__(self, results_dir: Path, scenario_name: str, kernel_slugs: list[str]):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._name = partial(bundle_name, stamp, scenario_name, kernel_slugs)
        results_dir.mkdir(parents=True, exist_ok=True)
        self.path = results_dir / f".tmp-{self._name()}-{os.getpid()}-{next(_writers)}"
        self.path.mkdir()
        self.bundle = Bundle(self.path, Manifest(
            host=host_info(), harness=HarnessRecord(version=__version__, git_commit=git_commit()), started=utc_now()))

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    def rep_dir(self, kernel_slug: str, rep: int) -> Path:
        d = self.path / kernel_slug / f"rep{rep}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add_metric(self, name: str, value: float, *, phase: str, rep: int, kernel: str, unit: str | None = None):
        self.bundle.metrics.append(MetricRow.measured(name, value, phase=phase, rep=rep, kernel=kernel, unit=unit))

    def values(self, name: str, phase: str | None = None, kernel: str | None = None) -> list[float]:
        return self.bundle.values(name, phase, kernel)

    # -- what a scenario run records (harness.scenario.sink.RunSink) ---------------------------
    def set_environment(self, *, accel: str, timing: str, qemu_version: str, qemu_binary: str,
                        machine: dict | None = None) -> None:
        self.manifest.accel = accel
        self.manifest.timing = timing
        self.manifest.qemu = QemuRecord(version=qemu_version, binary=qemu_binary, argv=None)
        self.manifest.machine = machine

    def set_schedule(self, *, jobs: int, order: list[dict]) -> None:
        self.manifest.jobs = jobs
        self.manifest.rep_order = order

    def add_kernel(self, record: KernelRecord) -> None:
        self.manifest.kernels.append(record.model_copy(deep=True))

    def update_kernel(self, index: int, *, zeroing_counters: str | None, guest_release: str | None,
                      qemu_argv: list[str], clocksource: str | None = None, zeroing: dict | None = None) -> None:
        """What a boot of kernel `index` found out; the first boot's QEMU command line is the bundle's."""
        kernel = self.manifest.kernels[index]
        kernel.zeroing_counters = zeroing_counters
        if zeroing is not None:
            kernel.zeroing = zeroing
        kernel.guest_release = guest_release
        kernel.clocksource = clocksource
        qemu = self.manifest.qemu
        if qemu is not None and qemu.argv is None and qemu_argv:
            qemu.argv = qemu_argv

    def set_expectations(self, rows: list[dict]) -> None:
        self.bundle.expectations = [ExpectationRow.model_validate(r) for r in rows]

    def finish(self, status: str, error: str | None) -> Path:
        """Write the JSON files and move the bundle into place; returns its final path."""
        self.manifest.status = status
        self.manifest.error = error
        self.manifest.ended = utc_now()
        self.bundle.write(self.path)
        self.path = self.bundle.path = rename_unique(self.path, self._name)
        return self.path
