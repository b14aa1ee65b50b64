"""The `harness` command line.  Each stage module adds its own subcommands with register()."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from harness import __version__
from harness.errors import HarnessError, InputError

# Modules that provide register(subparsers); each subcommand sets func(args) -> exit code.
SUBCOMMAND_MODULES = [
    "harness.doctor",
    "harness.run",
    "harness.bench",
    "harness.kernel_build",
    "harness.compare",
    "harness.table",
    "harness.report",
    "harness.nightly",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    parser.add_argument("--version", action="version", version=f"balloon-testbed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _interrupt_on_sigterm(signum, frame):
    # CI timeouts send SIGTERM: unwind like Ctrl-C so QEMU is stopped and the bundle marked failed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    parser = build_parser()
    args = parser.parse_args(argv)
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
