"""One QEMU process and everything attached to it, owned by a context manager.

The VM object starts QEMU with a private run directory (QMP socket) and SSH forwarded on
127.0.0.1 only, connects QMP, and always stops QEMU again: on normal exit, on exceptions, on
Ctrl-C, and (through PR_SET_PDEATHSIG) even when the harness itself is killed.  Whatever the guest
layer attaches (its SSH connection) is closed before QEMU stops.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from harness.constants import READY_MARKER
from harness.errors import HarnessError
from harness.machine import balloon, migration
from harness.machine.config import MachineConfig
from harness.machine.qemu_argv import check_hugepages, qemu_argv
from harness.machine.qemu_process import QemuProcess, QemuStartFailed
from harness.machine.qmp import QMP
from harness.paths import cache_root, private_dir
from harness.process import poll_until

SERIAL_POLL_S = 0.02  # how often the serial log is read while waiting for a marker
PANIC_MARKERS = ("Kernel panic", "BUG: unable to handle", "Oops:", "general protection fault")


RESTORE_TIMEOUT_S = 300  # to save or load a guest's state (a file of its non-zero pages)


class Closeable(Protocol):
    def close(self) -> None: ...


class GuestDied(HarnessError):
    """QEMU exited, the guest panicked, or it stopped answering."""


def run_dir_root() -> Path:
    return private_dir(cache_root() / "run")


def run_dir_owner(path: Path) -> int | None:
    """The harness PID a run dir (vm-<pid>-<random>) belongs to."""
    parts = path.name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "vm" and parts[1].isdigit() else None


def sweep_stale_run_dirs() -> None:
    """Remove run dirs whose harness process is gone (it was SIGKILLed before it could clean up)."""
    for path in run_dir_root().iterdir():
        owner = run_dir_owner(path)
        if owner is not None and owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(path, ignore_errors=True)


class VM:
    """A guest under QEMU.  Use as a context manager; logs go to `logdir`.

    `migrate()` moves the running guest to a fresh QEMU; from then on `qmp`, `pid`, `ssh_port` and `argv` are
    the destination's, and the source's logs stay in `logdir` beside them."""

    def __init__(self, *, kernel_image: Path, initrd: Path, config: MachineConfig, accel: str, logdir: Path,
                 restore_from: Path | None = None):
        self.restore_from = restore_from  # a saved guest (save_state) this VM starts from instead of booting
        self.restore_s: float | None = None  # how long loading it took
        self.kernel_image = kernel_image
        self.initrd = initrd
        self.config = config
        self.accel = accel
        self.logdir = logdir
        self.serial_log = logdir / "serial.log"
        self.rundir: Path | None = None
        self.started_at = 0.0  # when the first QEMU started: the clock of rss.csv and of every step
        self.migrations = 0
        self._attached: list[Closeable] = []
        self._qemu: QemuProcess | None = None
        self._incoming: QemuProcess | None = None  # a migration's destination until it takes over
        self._killed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> VM:
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def qemu(self) -> QemuProcess:
        assert self._qemu is not None, "launch() starts QEMU"
        return self._qemu

    @property
    def pid(self) -> int:
        return self.qemu.pid

    @property
    def qmp(self) -> QMP | None:
        return None if self._qemu is None else self._qemu.qmp

    @property
    def argv(self) -> list[str]:
        return [] if self._qemu is None else self._qemu.argv

    @property
    def ssh_port(self) -> int:
        return 0 if self._qemu is None else self._qemu.ssh_port

    def launch(self) -> None:
        if self._killed:
            raise GuestDied("stopped before QEMU started")
        self.logdir.mkdir(parents=True, exist_ok=True)
        sweep_stale_run_dirs()
        self.rundir = Path(tempfile.mkdtemp(prefix=f"vm-{os.getpid()}-", dir=run_dir_root()))
        try:
            if self.config.memory_backend == "hugetlb":
                check_hugepages(self.config.memory_mib)
            self._qemu = self._new_qemu(incoming="defer" if self.restore_from else None)
            self._start(self._qemu)
            if self._killed:  # kill() ran while QEMU was starting
                self.kill()
            self.started_at = self._qemu.started_at
            self._qemu.connect_qmp(timeout=120, alive=self.check_alive)
            if self.restore_from is not None:
                assert self.qmp is not None
                self.restore_s = migration.load_state(self.qmp, self.restore_from, RESTORE_TIMEOUT_S,
                                                      alive=self.check_alive)
        except BaseException:
            self.shutdown()
            raise

    def _new_qemu(self, incoming: str | None = None) -> QemuProcess:
        destination = incoming is not None and self._qemu is not None  # else: the first QEMU (maybe restoring)
        suffix = f"-mig{self.migrations}" if destination else ""
        rundir = self._rundir()

        def argv_for(ssh_port: int) -> list[str]:
            return qemu_argv(kernel=self.kernel_image, initrd=self.initrd, config=self.config, accel=self.accel,
                             rundir=rundir, serial_log=self.serial_log, ssh_port=ssh_port,
                             qmp_socket=rundir / f"qmp{suffix}.sock", incoming=incoming)

        label = f"destination QEMU (migration {self.migrations})" if destination else "QEMU"
        return QemuProcess(argv_for, self.logdir, rundir / f"qmp{suffix}.sock", suffix, label)

    def _start(self, qemu: QemuProcess) -> None:
        try:
            qemu.start()
        except QemuStartFailed as exc:
            raise GuestDied(str(exc)) from None

    def _rundir(self) -> Path:
        assert self.rundir is not None, "launch() creates the run dir"
        return self.rundir

    def kill(self) -> None:
        """Kill QEMU now (both, during a migration); safe from another thread.  The thread that owns the VM then
        finds it dead (check_alive, a broken SSH connection) and shuts it down as usual."""
        self._killed = True
        for qemu in (self._qemu, self._incoming):
            if qemu is not None:
                qemu.send_kill()

    def attach(self, thing: Closeable) -> None:
        """Close `thing` (a connection into the guest) when the VM shuts down, before QEMU stops."""
        self._attached.append(thing)

    def detach(self, thing: Closeable) -> None:
        """Close `thing` now (a connection through a QEMU that is going away)."""
        if thing in self._attached:
            self._attached.remove(thing)
        thing.close()

    def shutdown(self) -> None:
        """Stop every QEMU for sure and release everything; safe to call twice."""
        while self._attached:
            self._attached.pop().close()
        for qemu in (self._incoming, self._qemu):
            if qemu is not None:
                qemu.stop()
        self._incoming = None
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None

    def cpu_seconds(self) -> float:
        """CPU time QEMU has used so far (user + system, all its threads): what a boot cost the host, which
        its load changes far less than the wall time."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- migration ---------------------------------------------------------------------------
    def migrate(self, mode: str, precopy_s: float, timeout: float, bandwidth_mib_s: int | None = None,
                window_balloon: balloon.WindowTarget | None = None) -> migration.MigrationStats:
        """Live-migrate the guest to a fresh QEMU (the same command line, its own SSH port, `-incoming defer`)
        over a unix socket in the private run dir.  On success the source has quit and this VM is the
        destination; on failure the destination is gone and the source still owns the guest (or, when
        postcopy failed after the switch-over, the step's error says so and shutdown stops both)."""
        self.migrations += 1
        dest = self._new_qemu(incoming="defer")
        self._incoming = dest

        def alive() -> None:
            if dest.returncode is not None:  # a refused migration, not a dead guest: the source still runs it
                raise migration.MigrationFailed(f"{mode} migration failed: the destination QEMU exited with code "
                                                f"{dest.returncode}")
            self.check_alive()
            if window_balloon is not None:
                window_balloon.tick([dest.qmp, self.qmp])

        try:
            self._start(dest)
            dest.connect_qmp(timeout=120, alive=alive)
            assert dest.qmp is not None and self.qmp is not None
            uri = f"unix:{self._rundir() / f'migrate-{self.migrations}.sock'}"
            stats = migration.live_migrate(self.qmp, dest.qmp, uri, mode, precopy_s, timeout, alive=alive,
                                           bandwidth_mib_s=bandwidth_mib_s)
        except migration.MigrationFailed as exc:
            dest.kill()
            self._incoming = None
            # The source often sees only a broken socket: the destination's own error says why.
            said = [line.split(": ", 1)[-1] for line in dest.stderr_text().splitlines() if line.strip()]
            raise migration.MigrationFailed(f"{exc}" + (f"; the destination said: {' / '.join(said[-3:])}"
                                                        if said else "")) from None
        except BaseException:
            dest.kill()
            self._incoming = None
            raise
        source, self._qemu, self._incoming = self._qemu, dest, None
        assert source is not None
        source.stop()
        return stats

    def save_state(self, path: Path) -> migration.MigrationStats:
        """Write the running guest's whole state to `path` (paused meanwhile); it then runs on."""
        assert self.qmp is not None
        return migration.save_state(self.qmp, path, RESTORE_TIMEOUT_S, alive=self.check_alive)

    def background_snapshot(self, timeout: float, bandwidth_mib_s: int | None = None,
                            window_balloon: balloon.WindowTarget | None = None) -> migration.MigrationStats:
        """Save the running guest to a file in the run dir with QEMU's background-snapshot (write-protect
        tracking: the guest keeps running); the file is removed again, its size is in the result."""
        assert self.qmp is not None
        path = self._rundir() / f"snapshot-{time.monotonic_ns()}.bin"
        try:
            def alive() -> None:
                self.check_alive()
                if window_balloon is not None:
                    window_balloon.tick([self.qmp])

            return migration.background_snapshot(self.qmp, path, timeout, alive=alive, bandwidth_mib_s=bandwidth_mib_s)
        finally:
            path.unlink(missing_ok=True)

    # -- health ------------------------------------------------------------------------------
    def serial_text(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def panic_line(self) -> str | None:
        for line in self.serial_text().splitlines():
            if any(marker in line for marker in PANIC_MARKERS):
                return line.strip()
        return None

    def check_alive(self) -> None:
        """Raise GuestDied with the best explanation if QEMU exited or the guest panicked."""
        panic = self.panic_line()
        for qemu in (self._qemu, self._incoming):
            if qemu is None or qemu.returncode is None:
                continue
            if self._killed:
                raise GuestDied("QEMU was stopped by the harness")
            if panic:
                raise GuestDied(f"{qemu.label} exited with code {qemu.returncode} after a guest kernel failure: "
                                f"{panic}")
            raise GuestDied(qemu.exit_reason() or "")
        if panic:
            raise GuestDied(f"guest kernel failure: {panic}")

    def explain_failure(self, grace_s: float = 2.0) -> None:
        """After a failed step: raise GuestDied if a dead QEMU or a panicked guest is the real cause."""
        if self._qemu is not None:
            self._qemu.wait(grace_s)  # still running after it: the step's own error stands, unless the guest panicked
        self.check_alive()

    # -- readiness ---------------------------------------------------------------------------
    def wait_for_marker(self, timeout: float, marker: str = READY_MARKER) -> float:
        """Wait until the guest prints `marker` on the serial console; seconds since QEMU started."""
        poll_until(lambda: marker in self.serial_text(), timeout=timeout, interval=SERIAL_POLL_S,
                   alive=self.check_alive, started=self.started_at,
                   on_timeout=lambda: GuestDied(f"guest did not boot within {timeout:.0f} s "
                                                f"(no {marker!r} on the serial console)"))
        return time.monotonic() - self.started_at
