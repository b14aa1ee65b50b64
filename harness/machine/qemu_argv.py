"""The QEMU command line for one guest, from its machine config."""

from __future__ import annotations

import socket
from pathlib import Path

from harness.constants import QEMU_BINARY
from harness.errors import HarnessError
from harness.machine.config import MachineConfig

QBOOT = Path("/usr/share/qemu/qboot.rom")
# Guest time from the instruction count: 1 instruction = 1 ns; idle time skipped (sleep=off), never
# throttled to host time (align=off).  TCG only.
ICOUNT_ARGS = ["-icount", "shift=0,sleep=off,align=off"]
# no_timer_check: the IO-APIC timer check counts ticks over a delay loop; on a loaded host under TCG it can
# miss them and panic ("IO-APIC + timer doesn't work"), as it did here with 20 runnable threads on 2 cores.
# What boot does that no scenario needs, measured with initcall_debug under TCG (2026-12-06): the crypto
# self-tests (cryptomgr.notests), the jitterentropy RNG's self-test, KDF108's self-test, the encrypted-keys type
# and the BPF kfunc sets whose registration parses the whole vmlinux BTF: together about 1 s of QEMU CPU time
# of the stock kernel's 4.4 s to init (`harness bench boot`).  Then IPv6 (inet6_init, 0.2 s; SSH and the
# scenarios use IPv4 only) and the CRC-T10DIF and CRC64-Rocksoft crypto lookups (0.04 s; the library falls
# back to its generic code, which only block integrity would call).  None of them touches memory management.
BOOT_TRIMS = ("cryptomgr.notests ipv6.disable=1 initcall_blacklist=jent_mod_init,crypto_kdf108_init,init_encrypted,"
              "bpf_tcp_ca_kfunc_init,bpf_dummy_struct_ops_init,crc_t10dif_mod_init,crc64_rocksoft_mod_init")
# Every tracefs ring buffer starts this small, per CPU: the zeroing counters (guest/tracefs_counters.py) are
# instances that need no more, and each instance made at the default 1.4 MiB a CPU was allocated, then
# shrunk: 34 counters took 1.35 s to set up in a TCG guest (2026-12-07).  Tracing of one's own at the top
# level wants trace_buf_size= on the scenario's cmdline (it comes later, so it wins), or buffer_size_kb.
TRACE_BUFFER_KB = 4
BASE_CMDLINE = ("console=ttyS0 panic=-1 rdinit=/init 8250.nr_uarts=1 loglevel=6 i8042.noaux i8042.nokbd i8042.nopnp "
                f"no_timer_check {BOOT_TRIMS} trace_buf_size={TRACE_BUFFER_KB}k")


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


def memory_backend_args(config: MachineConfig, rundir: Path) -> list[str]:
    size = f"size={config.memory_mib}M"
    backend = config.memory_backend
    if backend == "ram":
        obj = f"memory-backend-ram,id=mem0,{size}"
    elif backend == "memfd":
        obj = f"memory-backend-memfd,id=mem0,{size},share=on"
    elif backend == "hugetlb":
        obj = f"memory-backend-memfd,id=mem0,{size},share=on,hugetlb=on,hugetlbsize=2M"
    elif backend in ("file", "file-private"):
        path = Path(config.mem_path) if config.mem_path else rundir
        share = "on" if backend == "file" else "off"
        obj = f"memory-backend-file,id=mem0,{size},share={share},mem-path={path}"
    else:
        raise HarnessError(f"unknown memory backend {backend}")
    if config.prealloc:
        obj += ",prealloc=on"
    args = ["-object", obj]
    if config.mem_lock:
        args += ["-overcommit", "mem-lock=on"]
    return args


def qemu_argv(
    *,
    kernel: Path,
    initrd: Path,
    config: MachineConfig,
    accel: str,
    rundir: Path,
    serial_log: Path,
    ssh_port: int,
    qemu_binary: str = QEMU_BINARY,
    qmp_socket: Path | None = None,
    incoming: str | None = None,
) -> list[str]:
    """The full QEMU command line for one guest.  `incoming` makes it a migration destination (`-incoming`);
    such a QEMU appends to the serial log, so the log reads on across the migration."""
    balloon = (
        "virtio-balloon-pci,id=balloon0,"
        f"free-page-reporting={'on' if config.free_page_reporting else 'off'},"
        f"deflate-on-oom={'on' if config.deflate_on_oom else 'off'}"
    )
    cmdline = " ".join(filter(None, [BASE_CMDLINE, config.cmdline]))
    argv = [
        qemu_binary,
        "-name", "balloon-testbed",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", f"{config.machine_type},memory-backend=mem0",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(config.cpus),
        "-m", f"{config.memory_mib}M",
        *memory_backend_args(config, rundir),
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", cmdline,
        "-chardev", f"file,id=serial0,path={serial_log}" + (",append=on" if incoming else ""),
        "-serial", "chardev:serial0",
        "-chardev", f"socket,id=qmp0,path={qmp_socket or rundir / 'qmp.sock'},server=on,wait=off",
        "-mon", "chardev=qmp0,mode=control",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", balloon,
        "-device", "virtio-rng-pci",
    ]
    if QBOOT.exists():
        argv += ["-bios", str(QBOOT)]  # much faster than SeaBIOS for a direct kernel boot
    if config.timing == "icount":
        if accel != "tcg":
            raise HarnessError(f"timing icount needs TCG; the accelerator is {accel} (see effective_timing)")
        argv += ICOUNT_ARGS
    if incoming:
        argv += ["-incoming", incoming]
    return argv


def effective_timing(requested: str, accel: str) -> tuple[str, str | None]:
    """The timing mode a run really uses, and a one-line note when it differs from the request:
    instruction counting exists only under TCG, so under KVM guest time is always real time."""
    if requested == "icount" and accel != "tcg":
        return "realtime", f"timing icount needs TCG: under {accel} guest time is real time (timing realtime)"
    return requested, None


