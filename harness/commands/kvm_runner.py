"""`harness kvm-runner -- CMD...`: run CMD in the KVM runner VM (harness/guest/runner_vm.py), where /dev/kvm
works through nested virtualisation on QEMU's emulated SVM; its output streams here, its exit status is ours."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from harness.guest.launch import choose_accel
from harness.guest.runner_vm import OUTER_CPU, RUNNER_CPUS, RunnerVM


def size_mib(text: str) -> int:
    m = re.fullmatch(r"(\d+)([MG])", text.strip().upper())
    if not m or int(m[1]) == 0:
        raise argparse.ArgumentTypeError(f"expected a size like 6G or 4096M, got {text!r}")
    return int(m[1]) * (1024 if m[2] == "G" else 1)


def cmd_kvm_runner(args) -> int:
    if args.check:
        choice = choose_accel()
        if choice.accel == "kvm":
            print(f"kvm-runner: not needed, KVM works on this host ({choice.reason})")
            return 0
        args.argv = ["true"]
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        argv = ["sh", "-c", "echo nothing to run: harness kvm-runner -- CMD ARGS...; exit 2"]
    shares = [Path(p) for p in args.share]
    for p in shares:
        p.mkdir(parents=True, exist_ok=True)
    logdir = Path(args.logs)
    vm = RunnerVM(shares=shares, logdir=logdir, memory_mib=args.memory, cpus=args.cpus,
                  cpu=args.outer_cpu, on_notice=lambda msg: print(f"kvm-runner: {msg}", file=sys.stderr, flush=True))

    def echo(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    result = vm.run(argv, cwd=Path.cwd(), timeout_s=args.timeout, on_output=echo)
    print(f"kvm-runner: exit {result.exit_code}; runner VM ready in {result.boot_s:.1f} s, "
          f"{result.wall_s:.1f} s in all; logs in {logdir}", file=sys.stderr)
    return result.exit_code


def register(sub) -> None:
    p = sub.add_parser(
        "kvm-runner", help="run a command in a TCG guest with nested KVM (the harness's KVM path, tested here)",
        description="Boot the KVM runner VM (a TCG guest whose AMD CPU has svm and npt, kvm_amd loaded, the host's "
                    "/ read-only under a tmpfs overlay), run CMD inside, chrooted into the host's files in the same "
                    "directory, stream its output and exit with its status.  Only the --share directories are "
                    "written back to the host.")
    p.add_argument("--share", action="append", default=[], metavar="DIR",
                   help="a host directory the command may write, at the same path (repeatable; made if missing)")
    p.add_argument("--logs", default="results/kvm/runner", metavar="DIR",
                   help="the runner VM's console log, QEMU and virtiofsd logs (default: %(default)s)")
    p.add_argument("--memory", type=size_mib, default="6G", help="the runner VM's RAM (default: %(default)s)")
    p.add_argument("--cpus", type=int, default=RUNNER_CPUS,
                   help="its vCPUs (default: %(default)s: with more, the TCG threads' races kill its kernel now and then)")
    p.add_argument("--outer-cpu", default=OUTER_CPU, metavar="MODEL",
                   help="QEMU -cpu of the runner VM (default: %(default)s; it needs svm and npt)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds the job may run (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="exit 0 when KVM works here or in the runner VM, else 2 with the reason (runs no command)")
    p.add_argument("argv", nargs="...", metavar="-- CMD", help="the command and its arguments")
    p.set_defaults(func=cmd_kvm_runner)
