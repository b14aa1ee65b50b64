"""What the QEMU layer needs to know about a guest machine, built once from a scenario (or by a benchmark)."""

from __future__ import annotations

from dataclasses import dataclass

# file: a shared (MAP_SHARED) file mapping; file-private: the same file mapped MAP_PRIVATE (share=off), where the
# guest's writes are anonymous copies and a discarded page reads the file again (see kernel_patches/README.md).
BACKENDS = ("ram", "memfd", "file", "file-private", "hugetlb")
FILE_BACKENDS = ("file", "file-private")
# How guest time runs: "realtime" (host clock) or "icount" (TCG only: 1 guest instruction = 1 ns of guest
# time, -icount shift=0,sleep=off,align=off, so timings measure executed work and repeat exactly).
TIMING_MODES = ("realtime", "icount")
# The QEMU machine type.  q35 by default: its ACPI _PRT is a static table, where pc's builds its 128 entries in
# an AML loop the guest runs for every PCI device it enables (about 0.1 s per virtio device under TCG).  pc puts
# more RAM below 4 GiB (zone DMA32) in guests over 2.75 GiB, so a comparison with older bundles may want it.
MACHINE_TYPES = ("q35", "pc")


@dataclass(frozen=True)
class MachineConfig:
    memory_mib: int = 2048
    cpus: int = 2
    cmdline: str = ""  # appended to the harness's own kernel command line
    memory_backend: str = "ram"  # one of BACKENDS
    prealloc: bool = False
    mem_lock: bool = False
    mem_path: str | None = None  # file backends: a directory or file path (default: the private run dir)
    free_page_reporting: bool = True
    deflate_on_oom: bool = False
    stats_interval_s: int = 0  # balloon guest statistics polling; 0 = off
    timing: str = "realtime"  # one of TIMING_MODES
    machine_type: str = "q35"  # one of MACHINE_TYPES


def parallel_tcg(accel: str, config: MachineConfig) -> bool:
    """TCG in real time with several vCPUs: one host thread per vCPU (MTTCG), so the vCPUs really run at once
    (under icount they share one thread)."""
    return accel == "tcg" and config.timing == "realtime" and config.cpus > 1
