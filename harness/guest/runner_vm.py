"""The KVM runner VM: the harness's KVM path run for real on a host without usable KVM.

A TCG guest whose emulated AMD CPU has svm and npt boots the stock kernel, loads its kvm_amd (nested
virtualisation) and mounts the host's own / over virtiofs, read-only under a tmpfs overlay, plus writable
shares for results.  A command then runs there, chrooted into the host's files: the same checkout, Python,
QEMU and kernel cache, but with a /dev/kvm.  Guests it starts run under QEMU's KVM accelerator, with
kvm-clock and KVM's virtio paths, while their instructions are still executed by the outer TCG: this tests
the KVM code paths, not hardware timing.

The outer CPU is `-cpu max,-xsave`.  With XSAVE the nested guest warns at boot (fpu__init_system_xstate:
"XSAVE consistency problem: size 832 != kernel_size 576"): after it enables AVX in XCR0, CPUID 0xD still
reports the x87+SSE size: the runner's KVM never learns of the XSETBV (QEMU 7.2's TCG does not seem to
raise SVM's XSETBV intercept).  Without XSAVE in the runner there is none in the nested guest either, and it boots
clean; the harness itself passes `-cpu host` as it does on a real KVM runner.

The runner's TCG runs one thread per vCPU (MTTCG).  In some runs a nested guest crashed after its balloon
inflated or deflated: a double fault in exc_page_fault (its page tables read back wrong), or a silent reset
(QEMU exits 0 under -no-reboot); 2 of 10 balloon runs here on 2026-12-06.  We believe the emulated
nested paging keeps a stale translation of a page the nested QEMU discarded; no real KVM host has shown it.
One thread for all vCPUs (`thread=single`) was too slow to tell: the smoke scenario's memdirty timed out and
the KVM probe's guest went quiet for 30 s.

So the runner has one vCPU (RUNNER_CPUS; --cpus gives more).  On 2026-12-07, with two, the runner's own kernel
died in each of the 3 runner VMs of one `make test-kvm` (an int3 mid-run; a #GP recursing at a %gs load and a
stack guard hit, both in the nested QEMU's task) and the nightly smoke cell on `base` reset its nested guest in
5 of 7 runs.  With one, the next `make test-kvm` passed with nothing repeated, in 15 minutes (17-21 with two,
repeats included), and the smoke scenario took 155 s against 160 s: on this 2-core host the second outer
vCPU bought nothing (the nested guest's two vCPUs take turns on the one).

The runner VM is a TCG guest too.  Its own boot can die of TCG's patching race ("Oops: int3", as any MTTCG
guest's can): that boot, before the job started, is booted again (BOOT_ATTEMPTS in all).  And once its CPU 0
stopped taking timer interrupts while a nested guest ran: the kernel reported the same RCU stall every 63 s
until the job's timeout, 9 minutes later.  The runner is given up on at its STALL_REPORTS_LOST-th stall report.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness.constants import QEMU_BINARY
from harness.errors import HarnessError, InputError
from harness.guest.image import GUEST_DIR, cached_cpio, pack_cpio
from harness.kernels.spec import STOCK, GuestKernel
from harness.kernels.stock import fetch_stock_kernel, stock_modules
from harness.machine.accel import TCG_TEXT_POKE_RACE
from harness.machine.qemu_argv import QBOOT
from harness.machine.vm import run_dir_root, sweep_stale_run_dirs
from harness.process import die_with_parent, poll_until

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")  # Debian's qemu-system-common
OUTER_CPU = "max,-xsave"  # see the module docstring
RUNNER_MODULES = ["kvm_amd", "overlay"]  # with their dependencies (kvm, irqbypass)
MARKER = "@@kvm-runner "
# Variables a job inherits from the host (besides HOME, PATH, TERM); the rest of the environment stays out.
PASSED_ENV = ("CI", "HARNESS_LOG", "PYTEST_ADDOPTS", "BALLOON_TESTBED_CACHE", "LANG")
IN_RUNNER_ENV = "BALLOON_TESTBED_KVM_RUNNER"  # set inside the runner VM
RUNNER_CPUS = 1  # see the module docstring
BOOT_ATTEMPTS = 3
DIED_AT_BOOT = "the KVM runner VM's kernel died at boot of TCG's patching race"
RCU_STALL = "rcu: INFO: rcu_preempt detected stalls"
STALL_REPORTS_LOST = 3  # about 150 s without a grace period (the first report at 21 s, then every 63 s)


class RunnerUnusable(InputError):
    """This host cannot give the runner VM a working KVM (no svm, kvm_amd does not load): exit 2."""


class RunnerDiedAtBoot(HarnessError):
    """The runner VM's kernel died of TCG's patching race before the job started."""


@dataclass
class RunnerResult:
    exit_code: int
    boot_s: float  # runner VM start to the job's start (host clock)
    wall_s: float  # runner VM start to its exit


def _image(kernel: GuestKernel, cpu: str) -> Path:
    """The runner's initramfs (busybox, init, kvm and overlay modules), cached by content."""
    modules = stock_modules(kernel, RUNNER_MODULES)
    busybox = Path("/bin/busybox")
    init = GUEST_DIR / "runner-init"
    h = hashlib.sha256(cpu.encode())
    for f in (busybox, init, *modules):
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())

    def make(root: Path) -> None:
        for d in ("bin", "etc", "lib/modules/runner"):
            (root / d).mkdir(parents=True)
        shutil.copy(busybox, root / "bin/busybox")
        shutil.copy(init, root / "init")
        (root / "init").chmod(0o755)
        for m in modules:
            shutil.copy(m, root / "lib/modules/runner" / m.name)
        (root / "etc/runner-modules").write_text("".join(f"{m.name}\n" for m in modules))
        (root / "etc/runner-cpu").write_text(cpu + "\n")

    return cached_cpio(f"runner-{h.hexdigest()[:20]}", make)


def job_script(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """The shell script the runner VM runs: `argv` in `cwd` with a clean environment."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return (f"cd {shlex.quote(str(cwd))} || exit 2\n"
            f"exec env -i {assigns} {shlex.join(argv)}\n")


def job_env() -> dict[str, str]:
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "TERM": "dumb", IN_RUNNER_ENV: "1"}
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    return env


class RunnerVM:
    """One runner VM running one job; use `run()`.  QEMU and the virtiofsd daemons never outlive it."""

    def __init__(self, *, shares: list[Path], logdir: Path, memory_mib: int = 6144, cpus: int = RUNNER_CPUS,
                 cpu: str = OUTER_CPU, on_notice: Callable[[str], None] = lambda _msg: None):
        self.on_notice = on_notice  # what the user should know beside the job's output (a boot done again)
        self.shares = [p.resolve() for p in shares]
        self.logdir = logdir
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.cpu = cpu
        self._procs: list[subprocess.Popen] = []

    def run(self, argv: list[str], *, cwd: Path, timeout_s: float,
            on_output: Callable[[str], None]) -> RunnerResult:
        check_runner_tools()
        kernel = fetch_stock_kernel(STOCK)
        image = _image(kernel, self.cpu)
        self.logdir.mkdir(parents=True, exist_ok=True)
        sweep_stale_run_dirs()
        # vm-<pid>-...: a harness SIGKILLed before cleaning up leaves it to the next sweep
        rundir = Path(tempfile.mkdtemp(prefix=f"vm-{os.getpid()}-runner-", dir=run_dir_root()))
        try:
            initrd = self._initrd(image, rundir, job_script(argv, cwd, job_env()))
            for attempt in range(1, BOOT_ATTEMPTS):
                try:
                    return self._boot(kernel, initrd, rundir, timeout_s, on_output)
                except RunnerDiedAtBoot as died:
                    kept = self.logdir / f"console.boot-{attempt}.log"
                    (self.logdir / "console.log").replace(kept)
                    self.on_notice(f"{died}; booting it again (its console: {kept})")
                    self._stop_all()  # virtiofsd serves one connection: each boot gets its own daemons
            return self._boot(kernel, initrd, rundir, timeout_s, on_output)
        finally:
            self._stop_all()
            shutil.rmtree(rundir, ignore_errors=True)

    def _boot(self, kernel: GuestKernel, initrd: Path, rundir: Path, timeout_s: float,
              on_output: Callable[[str], None]) -> RunnerResult:
        sockets = self._start_virtiofsd(rundir)
        return self._run_qemu(kernel, initrd, rundir, sockets, timeout_s, on_output)

    def _initrd(self, image: Path, rundir: Path, script: str) -> Path:
        """The cached runner image with this run's job appended (the kernel unpacks concatenated cpios)."""
        job = rundir / "job"
        (job / "etc").mkdir(parents=True)
        (job / "job.sh").write_text(script)
        (job / "etc/runner-shares").write_text("".join(f"out{i} {p}\n" for i, p in enumerate(self.shares)))
        pack_cpio(job, rundir / "job.cpio")
        initrd = rundir / "initrd.cpio"
        with initrd.open("wb") as out:
            for part in (image, rundir / "job.cpio"):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)
        return initrd

    def _start_virtiofsd(self, rundir: Path) -> list[tuple[str, Path]]:
        """One daemon per share: the host's / read-only (the guest mounts it ro), each writable share."""
        sockets = []
        log = (self.logdir / "virtiofsd.log").open("ab")
        for tag, source in [("hostroot", Path("/")), *((f"out{i}", p) for i, p in enumerate(self.shares))]:
            sock = rundir / f"{tag}.sock"
            sock.unlink(missing_ok=True)  # left by the daemon of a boot done again
            self._procs.append(subprocess.Popen(
                [str(VIRTIOFSD), f"--socket-path={sock}", "-o", f"source={source}", "-o", "cache=none",
                 "-o", "sandbox=chroot"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=die_with_parent))
            sockets.append((tag, sock))
        log.close()
        poll_until(lambda: all(sock.exists() for _tag, sock in sockets), timeout=10, interval=0.02,
                   alive=self._daemons_alive,
                   on_timeout=lambda: RunnerUnusable(f"virtiofsd did not start (see {self.logdir / 'virtiofsd.log'})"))
        return sockets

    def _daemons_alive(self) -> None:
        for p in self._procs:
            if p.poll() is not None:
                why = (self.logdir / "virtiofsd.log").read_text(errors="replace").strip().splitlines()
                raise RunnerUnusable(f"virtiofsd cannot share this host's files (exit {p.returncode}"
                                     f"{': ' + why[-1] if why else ''})")

    def argv(self, kernel: GuestKernel, initrd: Path, rundir: Path, sockets: list[tuple[str, Path]]) -> list[str]:
        argv = [
            QEMU_BINARY, "-name", "kvm-runner", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", "tcg", "-cpu", self.cpu, "-smp", str(self.cpus), "-m", f"{self.memory_mib}M",
            # virtiofs needs guest RAM the daemons can map
            "-object", f"memory-backend-memfd,id=mem0,size={self.memory_mib}M,share=on",
            "-machine", "pc,memory-backend=mem0",
            "-kernel", str(kernel.boot_image or kernel.bzimage), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 rdinit=/init 8250.nr_uarts=1 no_timer_check loglevel=4",
            "-serial", f"file:{self.logdir / 'console.log'}",
            "-device", "virtio-serial-pci", "-chardev", f"file,id=job,path={rundir / 'job.out'}",
            "-device", "virtconsole,chardev=job",
        ]
        for tag, sock in sockets:
            argv += ["-chardev", f"socket,id={tag},path={sock}", "-device", f"vhost-user-fs-pci,chardev={tag},tag={tag}"]
        if QBOOT.exists():
            argv += ["-bios", str(QBOOT)]
        return argv

    def _run_qemu(self, kernel: GuestKernel, initrd: Path, rundir: Path, sockets: list[tuple[str, Path]],
                  timeout_s: float, on_output: Callable[[str], None]) -> RunnerResult:
        argv = self.argv(kernel, initrd, rundir, sockets)
        (self.logdir / "qemu-argv.txt").write_text(shlex.join(argv) + "\n")
        out_path = rundir / "job.out"
        out_path.write_bytes(b"")  # a boot done again starts from an empty job output
        console = self.logdir / "console.log"
        console.unlink(missing_ok=True)  # an earlier run's stall reports are not this one's
        started = time.monotonic()
        with (self.logdir / "qemu.stderr").open("wb") as err:
            qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=die_with_parent)
        self._procs.append(qemu)
        reader = _MarkerReader(out_path, on_output)
        stalls = _ConsoleCounter(console, RCU_STALL)

        def exited() -> bool:
            reader.pump()
            return qemu.poll() is not None

        def not_stalled() -> None:
            if stalls.count() >= STALL_REPORTS_LOST:
                raise HarnessError(f"the KVM runner VM's kernel stalled ({STALL_REPORTS_LOST} RCU stall reports, "
                                   f"no grace period for about 150 s; console: {console})")

        try:
            poll_until(exited, timeout=timeout_s, interval=0.1, started=started, alive=not_stalled,
                       on_timeout=lambda: HarnessError(f"the KVM runner VM's job did not finish within "
                                                       f"{timeout_s:.0f} s (console: {console})"))
        finally:
            stalls.close()
        reader.pump(final=True)
        if reader.unusable:
            raise RunnerUnusable(f"KVM runner VM: {reader.unusable}")
        if died_of_patching_race_at_boot(reader, console.read_text(errors="replace")):
            raise RunnerDiedAtBoot(f"{DIED_AT_BOOT} (Oops: int3)")
        if reader.exit_code is None:
            why = (self.logdir / "qemu.stderr").read_text(errors="replace").strip().splitlines()
            raise HarnessError(f"the KVM runner VM stopped before its job finished (QEMU exit {qemu.returncode}"
                               f"{': ' + why[-1] if why else ''}; console: {self.logdir / 'console.log'})")
        wall = time.monotonic() - started
        return RunnerResult(reader.exit_code, (reader.ready_at or started) - started, wall)

    def _stop_all(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.kill()
            p.wait()
        self._procs.clear()


class _FollowedFile:
    """A file another process is writing, read as it grows: the whole lines added since the last look."""

    def __init__(self, path: Path):
        self.path = path
        self.fh: BinaryIO | None = None
        self.buf = b""

    def new_lines(self, final: bool = False) -> list[bytes]:
        """With `final`, also the last line without its newline, and the file is closed."""
        if self.fh is None:
            if not self.path.exists():  # QEMU has not made it yet
                return []
            self.fh = self.path.open("rb")
        self.buf += self.fh.read()
        *lines, self.buf = self.buf.split(b"\n")
        if final:
            if self.buf:
                lines.append(self.buf)
                self.buf = b""
            self.close()
        return lines

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


class _ConsoleCounter:
    """Counts the lines of a growing console log that contain `text`, reading only what was added."""

    def __init__(self, path: Path, text: str):
        self.file = _FollowedFile(path)
        self.text = text.encode()
        self.seen = 0

    def count(self) -> int:
        self.seen += sum(self.text in line for line in self.file.new_lines())
        return self.seen

    def close(self) -> None:
        self.file.close()


class _MarkerReader:
    """Follows the job's output file: hands each line on, and picks out the runner's own marker lines."""

    def __init__(self, path: Path, on_output: Callable[[str], None]):
        self.file = _FollowedFile(path)
        self.on_output = on_output
        self.exit_code: int | None = None
        self.unusable: str | None = None
        self.ready_at: float | None = None

    def pump(self, final: bool = False) -> None:
        for raw in self.file.new_lines(final):
            line = raw.decode(errors="replace").rstrip("\r")
            if line.startswith(MARKER) and line.endswith("@@"):
                self._marker(line[len(MARKER):-2])
            else:
                self.on_output(line + "\n")

    def _marker(self, text: str) -> None:
        word, _, rest = text.partition(" ")
        if word == "exit":
            self.exit_code = int(rest)
        elif word == "unusable":
            self.unusable = rest
        elif word == "ready":
            self.ready_at = time.monotonic()


def died_of_patching_race_at_boot(reader: _MarkerReader, console_text: str) -> bool:
    """Whether the runner VM's kernel died of TCG's patching race before the job started (safe to boot again)."""
    return reader.exit_code is None and reader.ready_at is None and TCG_TEXT_POKE_RACE.search(console_text) is not None


def check_runner_tools() -> None:
    """The runner VM needs virtiofsd (Debian's qemu-system-common) and QEMU: exit 2 before booting without."""
    if not VIRTIOFSD.exists():
        raise RunnerUnusable(f"{VIRTIOFSD} is missing: apt-get install qemu-system-common")
    if shutil.which(QEMU_BINARY) is None:
        raise RunnerUnusable(f"{QEMU_BINARY} is missing: apt-get install qemu-system-x86")


def in_runner_vm() -> bool:
    return os.environ.get(IN_RUNNER_ENV) == "1"
