"""balloon testbed: boot (patched) Linux guest kernels under QEMU, drive virtio-balloon and free page
reporting, and measure page zeroing, timings and host memory into result bundles you can compare.

usual commands:
  harness doctor                                  is this machine ready, and which accelerator works
  harness run scenarios/smoke.yaml                run a scenario; prints the bundle path last
  harness run SCENARIO --kernel base+SERIES --kernel base --reps 5
                                                  the same scenario on several kernels
  harness compare results/A [results/B]           judge kernels against a baseline; exit 1 on a regression
  harness report results --out report/            HTML and Markdown report of a results directory
  harness ablate SCENARIO --series NAME           what each patch of a series changed, patch by patch
  harness bisect SCENARIO --good SPEC --bad SPEC --metric NAME@PHASE
                                                  the first patch (or commit, --tree) that moved it
  harness run SCENARIO --timing icount            repeatable timings under TCG (instruction counting)
  harness run SCENARIO --timing icount --jobs 2   the same, two guests at once (icount runs only)
  harness kernel build base+SERIES                build a patched guest kernel (cached; SERIES@N: its first N)
  harness kernel list                             the cached kernel builds
  harness schema > scenario.schema.json           JSON Schema of scenario files, for your editor
  harness plan MATRIX --shards N --out plan.json  the nightly matrix in N shards (run-shard, merge: as CI)
  harness kvm-runner -- CMD                       run CMD where KVM works: a TCG guest with nested KVM

exit codes: 0 ok, 1 the run failed or an expectation broke, 2 bad input (bisect-check: see its --help).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from harness import __version__
from harness.errors import HarnessError, InputError

# One module per verb, each with register(subparsers); a subcommand sets func(args) -> exit code.
SUBCOMMAND_MODULES = [
    "harness.commands.run",
    "harness.commands.compare",
    "harness.commands.report",
    "harness.commands.table",
    "harness.commands.trust",
    "harness.commands.ablate",
    "harness.commands.bisect",
    "harness.commands.nightly",
    "harness.commands.plan",
    "harness.commands.run_shard",
    "harness.commands.merge",
    "harness.commands.kernel",
    "harness.commands.bench",
    "harness.commands.doctor",
    "harness.commands.kvm_runner",
    "harness.commands.schema",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"balloon-testbed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# `git bisect run` reads exit 1-127 (but 125) as "bad": a usage error of bisect-check must abort the bisect.
USAGE_ERROR_EXIT = {"bisect-check": 128}


def _subcommand(argv: list[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def _interrupt_on_sigterm(signum, frame):
    # CI timeouts send SIGTERM: unwind like Ctrl-C so QEMU is stopped and the bundle marked failed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    # Started in the background by a non-interactive shell, a process inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: `kill -INT` would be lost and QEMU left running to the end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Diagnostics (commands run, retries) go to the log; HARNESS_LOG=debug shows them.
    logging.basicConfig(level=os.environ.get("HARNESS_LOG", "warning").upper(), format="%(name)s: %(message)s")
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    command = _subcommand(argv)
    try:
        args = parser.parse_args(argv)  # kernel spec options are parsed here, and bad ones raise InputError
    except SystemExit as exc:
        if exc.code == 2 and command in USAGE_ERROR_EXIT:
            return USAGE_ERROR_EXIT[command]
        raise
    except InputError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return USAGE_ERROR_EXIT.get(command, 2)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
