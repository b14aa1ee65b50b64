"""Live migration and background snapshots, driven over QMP, and query-migrate's figures.

Both are windows in which QEMU acknowledges free page reports (and balloon inflations) without discarding:
virtio_balloon_inhibited() is true on an incoming postcopy destination and during a background snapshot.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.machine.qmp import QMP, QMPError
from harness.process import poll_until

MODES = ("precopy", "postcopy")
POLL_S = 0.05
# Both QEMUs run on this host over a unix socket: do not throttle to QEMU's default of 128 MiB/s.
MAX_BANDWIDTH = 8 << 30
DONE = ("completed", "failed", "cancelled")
MIB = 1 << 20


# QEMU 7.2 does not rate-limit a background snapshot's stream (max-bandwidth is ignored there: 1.3 GiB took
# 4.5 s with it set to 64 MiB/s), so a throttled snapshot writes through this pipe, which reads at most
# argv[1] MiB/s; QEMU's writes block when it is full.
THROTTLE = """
import sys, time
rate = float(sys.argv[1]) * (1 << 20)
src, dst, start, done = sys.stdin.buffer, sys.stdout.buffer, time.monotonic(), 0
while chunk := src.read1(1 << 20):
    dst.write(chunk)
    done += len(chunk)
    time.sleep(max(0.0, start + done / rate - time.monotonic()))
"""


class MigrationFailed(HarnessError):
    pass


@dataclass
class MigrationStats:
    mode: str  # precopy, postcopy or background-snapshot
    status: str  # query-migrate's final status
    wall_s: float  # from `migrate` until the guest runs on the destination (or the snapshot is written)
    total_ms: float | None
    downtime_ms: float | None
    setup_ms: float | None
    transferred_mib: float
    postcopy_requests: int | None  # pages the destination faulted in from the source (postcopy)
    postcopy_after_s: float | None = None  # when postcopy was switched on (None: the precopy pass finished first)
    file_mib: float | None = None  # background snapshot: the size of the file written

    def to_json(self) -> dict:
        return asdict(self)


def set_capabilities(qmp: QMP, caps: dict[str, bool]) -> None:
    qmp.execute("migrate-set-capabilities",
                {"capabilities": [{"capability": name, "state": state} for name, state in caps.items()]})


def _status(qmp: QMP) -> dict:
    return qmp.execute("query-migrate", timeout=10)


def _wait_done(qmp: QMP, timeout: float, alive: Callable[[], None], what: str) -> dict:
    def done() -> dict | None:
        info = _status(qmp)
        return info if info.get("status") in DONE else None

    info = poll_until(done, timeout=timeout, interval=POLL_S, alive=alive,
                      on_timeout=lambda: MigrationFailed(f"{what} did not finish within {timeout:g} s "
                                                         f"(status {_status(qmp).get('status')})"))
    assert info is not None
    if info["status"] != "completed":
        raise MigrationFailed(f"{what} {info['status']}: {info.get('error-desc', 'QEMU gave no reason')}")
    # QEMU 7.2 can report "completed" a moment before it has filled in total-time and downtime.
    settled = poll_until(lambda: (i := _status(qmp)).get("total-time") and i, timeout=2, interval=POLL_S)
    return settled or info


def _stats(mode: str, info: dict, wall_s: float) -> MigrationStats:
    ram = info.get("ram", {})
    return MigrationStats(mode=mode, status=info["status"], wall_s=round(wall_s, 3),
                          total_ms=info.get("total-time"), downtime_ms=info.get("downtime"),
                          setup_ms=info.get("setup-time"),
                          transferred_mib=round(ram.get("transferred", 0) / MIB, 2),
                          postcopy_requests=ram.get("postcopy-requests"))


def live_migrate(source: QMP, dest: QMP, uri: str, mode: str, precopy_s: float, timeout: float,
                 alive: Callable[[], None], bandwidth_mib_s: int | None = None) -> MigrationStats:
    """Migrate from `source` to `dest` (started with `-incoming defer`) over `uri`.  postcopy: switched on
    `precopy_s` seconds into the precopy pass, unless that pass completed first.  `bandwidth_mib_s` throttles
    both the precopy passes and postcopy's background push."""
    if mode not in MODES:
        raise HarnessError(f"unknown migration mode {mode!r}")
    caps = {"events": True, "postcopy-ram": mode == "postcopy"}
    try:
        for qmp in (source, dest):
            set_capabilities(qmp, caps)
        bandwidth = bandwidth_mib_s * MIB if bandwidth_mib_s else MAX_BANDWIDTH
        source.execute("migrate-set-parameters", {"max-bandwidth": bandwidth, "max-postcopy-bandwidth": bandwidth})
        dest.execute("migrate-incoming", {"uri": uri})
        t0 = time.monotonic()
        source.execute("migrate", {"uri": uri})
        postcopy_after = None
        if mode == "postcopy":
            poll_until(lambda: _status(source).get("status") in DONE or time.monotonic() - t0 >= precopy_s,
                       timeout=precopy_s + 10, interval=min(POLL_S, precopy_s or POLL_S), alive=alive)
            if _status(source).get("status") in ("setup", "active"):
                try:
                    source.execute("migrate-start-postcopy")
                    postcopy_after = round(time.monotonic() - t0, 3)
                except QMPError:
                    if _status(source).get("status") not in DONE:
                        raise  # not just the precopy pass finishing first
        info = _wait_done(source, timeout, alive, f"{mode} migration")
        # The destination runs the guest once it has loaded everything (postcopy: once every page came).
        _wait_done(dest, timeout, alive, f"{mode} migration (incoming)")
        poll_until(lambda: dest.execute("query-status", timeout=10).get("status") == "running",
                   timeout=timeout, interval=POLL_S, alive=alive,
                   on_timeout=lambda: MigrationFailed(f"the destination did not run the guest within {timeout:g} s"))
        wall = time.monotonic() - t0
    except QMPError as exc:
        raise MigrationFailed(f"{mode} migration failed: {exc}") from None
    stats = _stats(mode, info, wall)
    stats.postcopy_after_s = postcopy_after
    return stats


def background_snapshot(qmp: QMP, path: Path, timeout: float, alive: Callable[[], None],
                        bandwidth_mib_s: int | None = None) -> MigrationStats:
    """Write the running guest's state to `path` with QEMU's background-snapshot capability (guest RAM is
    write-protected with userfaultfd and saved as the guest goes on running)."""
    mode = "background-snapshot"
    try:
        set_capabilities(qmp, {"events": True, "background-snapshot": True})
        qmp.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
        t0 = time.monotonic()
        # QEMU 7.2 has no file: URI; its exec: runs the command with /bin/sh.
        writer = (f"{shlex.quote(sys.executable)} -c {shlex.quote(THROTTLE)} {bandwidth_mib_s}" if bandwidth_mib_s
                  else "cat")
        qmp.execute("migrate", {"uri": f"exec:{writer} > {shlex.quote(str(path))}"})
        info = _wait_done(qmp, timeout, alive, mode)
        wall = time.monotonic() - t0
        set_capabilities(qmp, {"background-snapshot": False})
        status = qmp.execute("query-status", timeout=10).get("status")
    except QMPError as exc:
        raise MigrationFailed(f"{mode} failed: {exc}") from None
    if status != "running":
        raise MigrationFailed(f"the guest is {status!r} after the {mode}, not running")
    stats = _stats(mode, info, wall)
    stats.file_mib = round(path.stat().st_size / MIB, 2) if path.exists() else None
    return stats


def save_state(qmp: QMP, path: Path, timeout: float, alive: Callable[[], None]) -> MigrationStats:
    """Pause the guest, write its whole state to `path` (a migration to a file), and let it run on: the
    booted guest every later repetition starts from (load_state)."""
    mode = "save"
    try:
        qmp.execute("stop")
        set_capabilities(qmp, {"events": True})
        qmp.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
        t0 = time.monotonic()
        qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(path))}"})
        info = _wait_done(qmp, timeout, alive, "saving the guest")
        wall = time.monotonic() - t0
        qmp.execute("cont")
    except QMPError as exc:
        raise MigrationFailed(f"saving the guest failed: {exc}") from None
    stats = _stats(mode, info, wall)
    stats.file_mib = round(path.stat().st_size / MIB, 2)
    return stats


def load_state(qmp: QMP, path: Path, timeout: float, alive: Callable[[], None]) -> float:
    """Load a state save_state() wrote into a QEMU started with `-incoming defer`, and run the guest;
    the seconds it took.  The pages land in the QEMU's own RAM (anonymous, or its memory backend), never in
    a mapping of the file, so a discard gives back what it gives back after a boot."""
    t0 = time.monotonic()
    try:
        qmp.execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(path))}"})
        _wait_done(qmp, timeout, alive, "loading the saved guest")
        if qmp.execute("query-status", timeout=10).get("status") != "running":
            qmp.execute("cont")
        poll_until(lambda: qmp.execute("query-status", timeout=10).get("status") == "running",
                   timeout=timeout, interval=POLL_S, alive=alive,
                   on_timeout=lambda: MigrationFailed(f"the loaded guest did not run within {timeout:g} s"))
    except QMPError as exc:
        raise MigrationFailed(f"loading the saved guest failed: {exc}") from None
    return time.monotonic() - t0
