"""One QEMU process and everything attached to it, owned by a context manager.

The VM object starts QEMU with a private run directory (QMP socket) and SSH forwarded on
127.0.0.1 only, connects QMP and SSH, and always stops QEMU again: on normal exit, on exceptions,
on Ctrl-C, and (through PR_SET_PDEATHSIG) even when the harness itself is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.guest import Guest
from harness.image import SshKeys
from harness.kernel import GuestKernel
from harness.paths import cache_root, private_dir
from harness.qmp import QMP
from harness.scenario import GuestOptions, QemuOptions

QEMU_BINARY = "qemu-system-x86_64"
READY_MARKER = "balloon-testbed: guest ready"
PANIC_MARKERS = ("Kernel panic", "BUG: unable to handle", "Oops:", "general protection fault")
QBOOT = Path("/usr/share/qemu/qboot.rom")
# Guest time from the instruction count: 1 instruction = 1 ns; idle time skipped (sleep=off), never
# throttled to host time (align=off).  TCG only.
ICOUNT_ARGS = ["-icount", "shift=0,sleep=off,align=off"]
BASE_CMDLINE = "console=ttyS0 panic=-1 rdinit=/init 8250.nr_uarts=1 loglevel=6 i8042.noaux i8042.nokbd i8042.nopnp"


class GuestDied(HarnessError):
    """QEMU exited, the guest panicked, or it stopped answering."""


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_hugepages(memory_mib: int, meminfo: str | None = None) -> None:
    """A hugetlb-backed guest needs that many free 2 MiB pages reserved on the host."""
    text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    free = int(next((line.split()[1] for line in text.splitlines() if line.startswith("HugePages_Free:")), 0))
    if free * 2 < memory_mib:
        need = memory_mib // 2
        raise HarnessError(
            f"memory_backend hugetlb needs {need} free 2 MiB huge pages on the host, {free} are free: "
            f"echo {need} > /proc/sys/vm/nr_hugepages"
        )


def memory_backend_args(guest: GuestOptions, qemu: QemuOptions, rundir: Path) -> list[str]:
    size = f"size={guest.memory_mib}M"
    backend = qemu.memory_backend
    if backend == "ram":
        obj = f"memory-backend-ram,id=mem0,{size}"
    elif backend == "memfd":
        obj = f"memory-backend-memfd,id=mem0,{size},share=on"
    elif backend == "hugetlb":
        obj = f"memory-backend-memfd,id=mem0,{size},share=on,hugetlb=on,hugetlbsize=2M"
    elif backend == "file":
        path = Path(qemu.mem_path) if qemu.mem_path else rundir
        obj = f"memory-backend-file,id=mem0,{size},share=on,mem-path={path}"
    else:
        raise HarnessError(f"unknown memory backend {backend}")
    if qemu.prealloc:
        obj += ",prealloc=on"
    args = ["-object", obj]
    if qemu.mem_lock:
        args += ["-overcommit", "mem-lock=on"]
    return args


def qemu_argv(
    *,
    kernel: Path,
    initrd: Path,
    guest: GuestOptions,
    qemu: QemuOptions,
    accel: str,
    rundir: Path,
    serial_log: Path,
    ssh_port: int,
    qemu_binary: str = QEMU_BINARY,
) -> list[str]:
    """The full QEMU command line for one guest."""
    b = qemu.balloon
    balloon = (
        "virtio-balloon-pci,id=balloon0,"
        f"free-page-reporting={'on' if b.free_page_reporting else 'off'},"
        f"deflate-on-oom={'on' if b.deflate_on_oom else 'off'}"
    )
    cmdline = " ".join(filter(None, [BASE_CMDLINE, guest.cmdline]))
    argv = [
        qemu_binary,
        "-name", "balloon-testbed",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", "pc,memory-backend=mem0",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(guest.cpus),
        "-m", f"{guest.memory_mib}M",
        *memory_backend_args(guest, qemu, rundir),
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", cmdline,
        "-chardev", f"file,id=serial0,path={serial_log}",
        "-serial", "chardev:serial0",
        "-chardev", f"socket,id=qmp0,path={rundir / 'qmp.sock'},server=on,wait=off",
        "-mon", "chardev=qmp0,mode=control",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", balloon,
        "-device", "virtio-rng-pci",
    ]
    if QBOOT.exists():
        argv += ["-bios", str(QBOOT)]  # much faster than SeaBIOS for a direct kernel boot
    if qemu.timing == "icount":
        if accel != "tcg":
            raise HarnessError(f"timing icount needs TCG; the accelerator is {accel} (see effective_timing)")
        argv += ICOUNT_ARGS
    return argv


def effective_timing(requested: str, accel: str) -> tuple[str, str | None]:
    """The timing mode a run really uses, and a one-line note when it differs from the request:
    instruction counting exists only under TCG, so under KVM guest time is always real time."""
    if requested == "icount" and accel != "tcg":
        return "realtime", f"timing icount needs TCG: under {accel} guest time is real time (timing realtime)"
    return requested, None


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


def _die_with_parent() -> None:
    """Runs in the QEMU child: SIGKILL it when the harness dies, so no QEMU outlives us."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class VM:
    """A guest under QEMU.  Use as a context manager; logs go to `logdir`."""

    def __init__(
        self,
        *,
        kernel: GuestKernel,
        initrd: Path,
        guest: GuestOptions,
        qemu: QemuOptions,
        accel: str,
        logdir: Path,
        keys: SshKeys,
    ):
        self.kernel = kernel
        self.initrd = initrd
        self.guest_opts = guest
        self.qemu_opts = qemu
        self.accel = accel
        self.logdir = logdir
        self.keys = keys
        self.serial_log = logdir / "serial.log"
        self.rundir: Path | None = None
        self.argv: list[str] = []
        self.ssh_port = 0
        self.started_at = 0.0
        self.qmp: QMP | None = None
        self.ssh: Guest | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "VM":
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def launch(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        sweep_stale_run_dirs()
        self.rundir = Path(tempfile.mkdtemp(prefix=f"vm-{os.getpid()}-", dir=run_dir_root()))
        try:
            if self.qemu_opts.memory_backend == "hugetlb":
                check_hugepages(self.guest_opts.memory_mib)
            self._start_qemu()
            self.qmp = QMP(self.rundir / "qmp.sock", self.logdir / "qmp.jsonl")
            self.qmp.connect(timeout=120, alive=self.check_alive)
        except BaseException:
            self.shutdown()
            raise

    def _start_qemu(self) -> None:
        for attempt in range(3):
            self.ssh_port = free_local_port()
            self.argv = qemu_argv(
                kernel=self.kernel.boot_image or self.kernel.bzimage,
                initrd=self.initrd,
                guest=self.guest_opts,
                qemu=self.qemu_opts,
                accel=self.accel,
                rundir=self.rundir,
                serial_log=self.serial_log,
                ssh_port=self.ssh_port,
            )
            (self.logdir / "qemu-argv.json").write_text(json.dumps(self.argv, indent=1))
            self._stderr = (self.logdir / "qemu.stderr").open("wb")
            self.started_at = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
                preexec_fn=_die_with_parent,
            )
            # A port taken between our probe and QEMU's bind is the only retryable start failure.
            time.sleep(0.05)
            if self._proc.poll() is None or "host forwarding" not in self._stderr_text():
                return
            self._stderr.close()
        raise GuestDied(f"QEMU could not forward SSH to a free local port: {self._stderr_text()}")

    def shutdown(self) -> None:
        """Stop QEMU for sure and release everything; safe to call twice."""
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
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
        deadline = self.started_at + timeout
        while marker not in self.serial_text():
            self.check_alive()
            if time.monotonic() > deadline:
                raise GuestDied(f"guest did not boot within {timeout:.0f} s (no {marker!r} on the serial console)")
            time.sleep(0.02)
        return time.monotonic() - self.started_at

    def wait_ready(self, timeout: float = 120, transcript: Path | None = None) -> float:
        """Wait until the guest answers a command over SSH; returns seconds since QEMU started."""
        self.wait_for_marker(timeout)
        deadline = self.started_at + timeout
        self.ssh = Guest(self.ssh_port, self.keys, transcript or self.logdir / "transcript.log")
        self.ssh.connect(deadline=deadline, alive=self.check_alive)
        self.ssh.run("true", timeout=max(5.0, deadline - time.monotonic()))
        return time.monotonic() - self.started_at
