"""The QEMU command line the VM class builds (no QEMU started here)."""

from __future__ import annotations

from pathlib import Path

from harness.kernels.spec import parse_kernel_spec
from harness.machine.config import MachineConfig
from harness.machine.qemu_argv import qemu_argv


def argv(**config) -> list[str]:
    return qemu_argv(kernel=Path("/k/bzImage"), initrd=Path("/k/initrd"),
                     config=MachineConfig(memory_mib=2048, cpus=2, **config), accel="tcg", rundir=Path("/run/x"),
                     serial_log=Path("/b/serial.log"), ssh_port=2222)


def value_after(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_ssh_forward_is_loopback_only_and_qmp_in_run_dir():
    a = argv()
    (netdev,) = value_after(a, "-netdev")
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert any("path=/run/x/qmp.sock" in c for c in value_after(a, "-chardev"))
    assert "-no-reboot" in a and "-nodefaults" in a


def test_a_migration_destination_listens_and_appends_to_the_serial_log():
    a = qemu_argv(kernel=Path("/k/bzImage"), initrd=Path("/k/initrd"), config=MachineConfig(), accel="tcg",
                  rundir=Path("/run/x"), serial_log=Path("/b/serial.log"), ssh_port=2223,
                  qmp_socket=Path("/run/x/qmp-mig1.sock"), incoming="defer")
    assert a[-2:] == ["-incoming", "defer"]
    assert "file,id=serial0,path=/b/serial.log,append=on" in value_after(a, "-chardev")
    assert any("path=/run/x/qmp-mig1.sock" in c for c in value_after(a, "-chardev"))
    assert "-incoming" not in argv() and "file,id=serial0,path=/b/serial.log" in value_after(argv(), "-chardev")


def test_balloon_device_options():
    a = argv(free_page_reporting=True, deflate_on_oom=True)
    assert "virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on" in value_after(a, "-device")
    a = argv(free_page_reporting=False)
    assert any("free-page-reporting=off" in d for d in value_after(a, "-device"))


def test_memory_backends():
    assert value_after(argv(), "-object") == ["memory-backend-ram,id=mem0,size=2048M"]
    assert value_after(argv(memory_backend="memfd", prealloc=True), "-object") == [
        "memory-backend-memfd,id=mem0,size=2048M,share=on,prealloc=on"]
    assert "hugetlb=on" in value_after(argv(memory_backend="hugetlb"), "-object")[0]
    assert "mem-path=/tmp/m" in value_after(argv(memory_backend="file", mem_path="/tmp/m"), "-object")[0]
    assert value_after(argv(memory_backend="file-private", mem_path="/tmp/m"), "-object") == [
        "memory-backend-file,id=mem0,size=2048M,share=off,mem-path=/tmp/m"]
    assert value_after(argv(memory_backend="file"), "-object") == [
        "memory-backend-file,id=mem0,size=2048M,share=on,mem-path=/run/x"]
    assert value_after(argv(mem_lock=True), "-overcommit") == ["mem-lock=on"]
    assert "memory-backend=mem0" in value_after(argv(), "-machine")[0]


def test_kernel_specs():
    assert parse_kernel_spec("stock").kind == "stock"
    spec = parse_kernel_spec("base+zeroing-stats+pg-zeroed")
    assert spec.kind == "build" and spec.series == ("zeroing-stats", "pg-zeroed")
    assert parse_kernel_spec("base").series == ()


def test_hugetlb_backend_needs_reserved_pages():
    import pytest

    from harness.errors import HarnessError
    from harness.machine.qemu_argv import check_hugepages

    check_hugepages(2048, "HugePages_Total: 1024\nHugePages_Free: 1024\n")
    with pytest.raises(HarnessError, match="echo 1024 > /proc/sys/vm/nr_hugepages"):
        check_hugepages(2048, "HugePages_Total: 0\nHugePages_Free: 0\n")


def test_stale_run_dirs_of_dead_harnesses_are_swept(tmp_path, monkeypatch):
    import subprocess

    from harness.machine.vm import run_dir_root, sweep_stale_run_dirs

    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = run_dir_root() / f"vm-{dead.pid}-abc"
    live = run_dir_root() / "vm-1-abc"  # init never dies
    foreign = run_dir_root() / "not-ours"
    for d in (stale, live, foreign):
        d.mkdir()
    sweep_stale_run_dirs()
    assert not stale.exists() and live.exists() and foreign.exists()


def test_icount_timing_adds_instruction_counting_under_tcg_only():
    from harness.machine.qemu_argv import effective_timing

    assert "-icount" not in argv()
    assert value_after(argv(timing="icount"), "-icount") == ["shift=0,sleep=off,align=off"]
    assert effective_timing("icount", "tcg") == ("icount", None)
    timing, note = effective_timing("icount", "kvm")
    assert timing == "realtime" and "needs TCG" in note
    assert effective_timing("realtime", "kvm") == ("realtime", None)
