"""From a kernel spec to a guest answering over SSH, written once for runs, benchmarks and the KVM probe:
resolve the kernel, build its initramfs, get the SSH keys, start the VM, wait until the guest answers."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.constants import READY_MARKER
from harness.errors import HarnessError, InputError
from harness.guest import delay_loop
from harness.guest.image import build_image
from harness.guest.keys import SshKeys, ssh_keys
from harness.guest.ssh import Guest
from harness.kernels.resolve import resolve_kernel
from harness.kernels.selftests import MM_DIR, build_mm_selftests
from harness.kernels.spec import STOCK, GuestKernel, KernelSpec
from harness.machine import accel
from harness.machine.config import MachineConfig
from harness.machine.vm import VM, GuestDied
from harness.process import poll_until

# A guest that prints nothing new on its console for this long hangs under this KVM; one that keeps printing is
# slow, not broken (nested KVM in the runner VM on a loaded host: 8-30 s to userspace), up to the longest wait.
KVM_PROBE_SILENCE_S = 30.0
KVM_PROBE_LONGEST_S = 300.0
SELFTESTS_GUEST_DIR = "/opt/selftests/mm"


@dataclass(frozen=True)
class BootKit:
    """Everything a guest boots from: the kernel, its initramfs, and the keys to log in with."""

    kernel: GuestKernel
    initrd: Path
    keys: SshKeys
    # mm selftests the scenario asked for that this kernel's tree did not build: name -> why
    selftests_not_built: dict[str, str] = field(default_factory=dict)


def prepare_boot(spec: KernelSpec, progress=None, files: dict[str, Path] | None = None,
                 mm_selftests: tuple[str, ...] = ()) -> BootKit:
    """Fetch or build the kernel and its initramfs (both cached), with a scenario's own `files` (guest path
    -> host file) and the named mm selftests built from the kernel's own source tree."""
    kernel = resolve_kernel(spec, progress)
    extra = dict(files or {})
    not_built: dict[str, str] = {}
    if mm_selftests:
        built = build_mm_selftests(kernel, progress)
        for name in mm_selftests:
            if name in built.binaries:
                extra[f"{SELFTESTS_GUEST_DIR}/{name}"] = built.binaries[name]
            elif name in built.not_built:
                not_built[name] = built.not_built[name]
            else:
                raise InputError(f"mm selftest {name!r}: {MM_DIR} of {spec.text} has no such test "
                                 f"(built: {', '.join(sorted(built.binaries))})")
    return BootKit(kernel, build_image(kernel, extra), ssh_keys(), not_built)


def make_vm(kit: BootKit, config: MachineConfig, accel_name: str, logdir: Path,
            restore_from: Path | None = None) -> VM:
    """The VM for `kit` (not started: use it as a context manager); `restore_from`: a guest saved after
    its boot (VM.save_state) to start from instead of booting."""
    lpj = delay_loop.preset(kit.kernel, accel_name, config) if restore_from is None else None
    if kit.kernel.cmdline or lpj:
        config = replace(config, cmdline=" ".join(filter(None, [config.cmdline, kit.kernel.cmdline, lpj])))
    return VM(kernel_image=kit.kernel.boot_image or kit.kernel.bzimage, initrd=kit.initrd, config=config,
              accel=accel_name, logdir=logdir, restore_from=restore_from)


def wait_ready(vm: VM, keys: SshKeys, timeout: float = 120, transcript: Path | None = None) -> tuple[Guest, float]:
    """Wait until the guest answers a command over SSH; the connection and seconds since QEMU started.

    The connection is closed when the VM shuts down."""
    vm.wait_for_marker(timeout)
    deadline = vm.started_at + timeout
    ssh = Guest(vm.ssh_port, keys, transcript or vm.logdir / "transcript.log", alive=vm.check_alive)
    vm.attach(ssh)
    ssh.connect(deadline=deadline, alive=vm.check_alive)
    ssh.run("true", timeout=max(5.0, deadline - time.monotonic()))
    ready = time.monotonic() - vm.started_at
    if delay_loop.wants_preset(vm.accel, vm.config):
        delay_loop.learn(ssh)
    return ssh, ready


def connect(vm: VM, keys: SshKeys, transcript: Path, timeout: float = 60) -> Guest:
    """Log in to a guest that is already up (loaded from a saved boot, or migrated) on the VM's port."""
    ssh = Guest(vm.ssh_port, keys, transcript, alive=vm.check_alive)
    vm.attach(ssh)
    deadline = time.monotonic() + timeout
    ssh.connect(deadline=deadline, alive=vm.check_alive)
    ssh.run("true", timeout=max(5.0, deadline - time.monotonic()))
    return ssh


def reconnect(vm: VM, keys: SshKeys, old: Guest, timeout: float = 60) -> Guest:
    """After a migration: close the connection through the old QEMU, log in again on the VM's new port."""
    vm.detach(old)
    return connect(vm, keys, old.transcript, timeout)


def probe_kvm() -> tuple[bool, str]:
    """Boot the stock kernel under KVM; True if it reached userspace within the timeout."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    kit = prepare_boot(STOCK)
    with tempfile.TemporaryDirectory(prefix="accel-probe-") as tmp:
        vm = make_vm(kit, MachineConfig(memory_mib=512, cpus=1), "kvm", Path(tmp))
        try:
            with vm:
                assert vm.qmp is not None
                qmp = vm.qmp
                started = last_change = time.monotonic()
                last_size = 0

                def outcome() -> str | None:
                    nonlocal last_size, last_change
                    if qmp.execute("query-status", timeout=2).get("status") == "internal-error":
                        return "internal-error"
                    text = vm.serial_text()
                    if READY_MARKER in text:
                        return "booted"
                    if len(text) != last_size:
                        last_size, last_change = len(text), time.monotonic()
                    elif time.monotonic() - last_change > KVM_PROBE_SILENCE_S:
                        return "stalled"
                    return None

                seen = poll_until(outcome, timeout=KVM_PROBE_LONGEST_S, interval=0.1, alive=vm.check_alive)
                took = time.monotonic() - started
                if seen == "internal-error":
                    return False, "KVM internal error"
                if seen == "booted":
                    return True, f"a guest kernel booted under KVM in {took:.1f} s"
                if seen == "stalled":
                    return False, (f"a guest kernel under KVM printed nothing for {KVM_PROBE_SILENCE_S:.0f} s "
                                   f"({last_size} bytes of console output, {took:.0f} s in)")
                return False, f"a guest kernel did not boot under KVM within {KVM_PROBE_LONGEST_S:.0f} s"
        except (GuestDied, HarnessError) as exc:
            stderr = Path(tmp) / "qemu.stderr"
            err = stderr.read_text(errors="replace").strip() if stderr.exists() else ""
            return False, (err.splitlines()[0] if err else str(exc))


def choose_accel(refresh: bool = False) -> accel.AccelChoice:
    """The accelerator to use here: cached, or probed by booting a guest under KVM."""
    return accel.choose_accel(probe_kvm, refresh=refresh)
