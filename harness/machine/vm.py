"""One QEMU process and everything attached to it, owned by a context manager.

The VM object starts QEMU with a private run directory (QMP socket) and SSH forwarded on
127.0.0.1 only, connects QMP, and always stops QEMU again: on normal exit, on exceptions, on
Ctrl-C, and (through PR_SET_PDEATHSIG) even when the harness itself is killed.  Whatever the guest
layer attaches (its SSH connection) is closed before QEMU stops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Protocol

from harness.constants import READY_MARKER
from harness.errors import HarnessError
from harness.machine.config import MachineConfig
from harness.machine.qemu_argv import check_hugepages, free_local_port, qemu_argv
from harness.machine.qmp import QMP
from harness.paths import cache_root, private_dir
from harness.process import die_with_parent, poll_until

SERIAL_POLL_S = 0.02  # how often the serial log is read while waiting for a marker
PANIC_MARKERS = ("Kernel panic", "BUG: unable to handle", "Oops:", "general protection fault")


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
    """A guest under QEMU.  Use as a context manager; logs go to `logdir`."""

    def __init__(self, *, kernel_image: Path, initrd: Path, config: MachineConfig, accel: str, logdir: Path):
        self.kernel_image = kernel_image
        self.initrd = initrd
        self.config = config
        self.accel = accel
        self.logdir = logdir
        self.serial_log = logdir / "serial.log"
        self.rundir: Path | None = None
        self.argv: list[str] = []
        self.ssh_port = 0
        self.started_at = 0.0
        self.qmp: QMP | None = None
        self._attached: list[Closeable] = []
        self._proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._killed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> VM:
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def launch(self) -> None:
        if self._killed:
            raise GuestDied("stopped before QEMU started")
        self.logdir.mkdir(parents=True, exist_ok=True)
        sweep_stale_run_dirs()
        self.rundir = Path(tempfile.mkdtemp(prefix=f"vm-{os.getpid()}-", dir=run_dir_root()))
        try:
            if self.config.memory_backend == "hugetlb":
                check_hugepages(self.config.memory_mib)
            self._start_qemu()
            if self._killed:  # kill() ran while QEMU was starting
                self.kill()
            self.qmp = QMP(self._rundir() / "qmp.sock", self.logdir / "qmp.jsonl")
            self.qmp.connect(timeout=120, alive=self.check_alive)
        except BaseException:
            self.shutdown()
            raise

    def _start_qemu(self) -> None:
        for _attempt in range(3):
            self.ssh_port = free_local_port()
            self.argv = qemu_argv(
                kernel=self.kernel_image,
                initrd=self.initrd,
                config=self.config,
                accel=self.accel,
                rundir=self._rundir(),
                serial_log=self.serial_log,
                ssh_port=self.ssh_port,
            )
            (self.logdir / "qemu-argv.json").write_text(json.dumps(self.argv, indent=1))
            self._stderr = (self.logdir / "qemu.stderr").open("wb")
            self.started_at = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
                preexec_fn=die_with_parent,
            )
            # A port taken between our probe and QEMU's bind is the only retryable start failure.
            time.sleep(0.05)
            if self._proc.poll() is None or "host forwarding" not in self._stderr_text():
                return
            self._stderr.close()
        raise GuestDied(f"QEMU could not forward SSH to a free local port: {self._stderr_text()}")

    def _rundir(self) -> Path:
        assert self.rundir is not None, "launch() creates the run dir"
        return self.rundir

    def kill(self) -> None:
        """Kill QEMU now; safe from another thread.  The thread that owns the VM then finds it dead (check_alive,
        a broken SSH connection) and shuts it down as usual."""
        self._killed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def attach(self, thing: Closeable) -> None:
        """Close `thing` (a connection into the guest) when the VM shuts down, before QEMU stops."""
        self._attached.append(thing)

    def shutdown(self) -> None:
        """Stop QEMU for sure and release everything; safe to call twice."""
        while self._attached:
            self._attached.pop().close()
        if self._proc is not None and self._proc.poll() is None and self.qmp is not None:
            try:
                self.qmp.execute("quit", timeout=3)
            except HarnessError:
                pass  # QEMU is dying or hung: the kill below handles it
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self._stderr is not None:
            self._stderr.close()
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None

    def cpu_seconds(self) -> float:
        """CPU time QEMU has used so far (user + system, all its threads): what a boot cost the host, which
        its load changes far less than the wall time."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # -- health ------------------------------------------------------------------------------
    def _stderr_text(self) -> str:
        try:
            return (self.logdir / "qemu.stderr").read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

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
        if self._proc is not None and self._proc.poll() is not None:
            if self._killed:
                raise GuestDied("QEMU was stopped by the harness")
            why = f"QEMU exited with code {self._proc.returncode}"
            if panic:
                why += f" after a guest kernel failure: {panic}"
            elif self._stderr_text():
                why += f": {self._stderr_text().splitlines()[-1]}"
            raise GuestDied(why)
        if panic:
            raise GuestDied(f"guest kernel failure: {panic}")

    def explain_failure(self, grace_s: float = 2.0) -> None:
        """After a failed step: raise GuestDied if a dead QEMU or a panicked guest is the real cause."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass  # still running: the step's own error stands, unless the guest panicked
        self.check_alive()

    # -- readiness ---------------------------------------------------------------------------
    def wait_for_marker(self, timeout: float, marker: str = READY_MARKER) -> float:
        """Wait until the guest prints `marker` on the serial console; seconds since QEMU started."""
        poll_until(lambda: marker in self.serial_text(), timeout=timeout, interval=SERIAL_POLL_S,
                   alive=self.check_alive, started=self.started_at,
                   on_timeout=lambda: GuestDied(f"guest did not boot within {timeout:.0f} s "
                                                f"(no {marker!r} on the serial console)"))
        return time.monotonic() - self.started_at
