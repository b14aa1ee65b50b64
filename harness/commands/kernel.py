"""`harness kernel build` and `harness kernel list`: build guest kernels (cached) and show the cache."""

from __future__ import annotations

import argparse
import sys

from harness.errors import InputError
from harness.kernels.build import build_kernel
from harness.kernels.cache import damaged_builds, list_cached
from harness.kernels.spec import parse_kernel_spec
from harness.kernels.stacks import load_stacks, stacks_table


def register(subparsers) -> None:
    p = subparsers.add_parser("kernel", help="build and list guest kernels")
    ksub = p.add_subparsers(dest="kernel_command", required=True)
    b = ksub.add_parser("build", help="build base[+SERIES...] or a named stack (cached); prints the bzImage path last")
    b.add_argument("spec", nargs="?", type=parse_kernel_spec,
                   help="base, base+SERIES[+SERIES...] or a named stack (optional with --tree)")
    b.add_argument("--config-fragment", action="append", default=[], metavar="F",
                   help="extra config fragment merged after kernel_patches/config/guest.config (repeatable)")
    b.add_argument("--tree", metavar="PATH", help="build this kernel checkout (never written to) instead of the base")
    b.set_defaults(func=_cmd_build)
    ls = ksub.add_parser("list", help="show cached kernel builds, or the named stacks")
    ls.add_argument("--stacks", action="store_true",
                    help="list the named stacks (kernel_patches/stacks.yaml): each name works as a kernel spec")
    ls.add_argument("--md", action="store_true", help="with --stacks: the Markdown table kernel_patches/README.md shows")
    ls.set_defaults(func=_cmd_list)


def _cmd_build(args: argparse.Namespace) -> int:
    if args.spec is None and args.tree is None:
        raise InputError("kernel build: give a SPEC (base or base+SERIES...) or --tree PATH")
    if args.spec is not None and args.spec.kind != "build":
        raise InputError(f"kernel build: spec {args.spec.text!r} is not base, base+SERIES... or a named stack")
    gk = build_kernel(args.spec, fragments=args.config_fragment, tree=args.tree)
    sys.stdout.flush()
    print(gk.bzimage)
    return 0


def _list_stacks(md: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    if md:
        sys.stdout.write(stacks_table())
        return 0
    table = Table(title="named stacks (kernel_patches/stacks.yaml)")
    table.add_column("name", no_wrap=True)
    table.add_column("spec", overflow="fold")
    table.add_column("purpose", overflow="fold")
    for s in load_stacks().values():
        table.add_row(s.name, s.spec, s.purpose)
    Console().print(table)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.md and not args.stacks:
        raise InputError("kernel list: --md goes with --stacks")
    if args.stacks:
        return _list_stacks(args.md)

    table = Table(title="cached guest kernels")
    table.add_column("spec", overflow="fold")  # long base+A+B specs wrap instead of being cut off
    for col in ("version", "size", "key", "built"):
        table.add_column(col, no_wrap=True)
    cached = list_cached()
    for info in cached:
        table.add_row(info.get("spec", "?"), info.get("kernelrelease") or "?",
                      f"{info['bzimage_size'] / 2**20:.1f} MiB", info["key"][:12],
                      (info.get("built_at") or "?").replace("T", " ")[:16])
    console = Console()
    if not console.is_terminal:  # piped: no terminal width to respect, so print whole specs on one line
        console.width = max([console.width] + [len(info.get("spec", "")) + 64 for info in cached])
    console.print(table)
    for key, problem in damaged_builds():
        console.print(f"damaged: {key[:12]}: {problem} (not served; the next build of its spec rebuilds it)",
                      markup=False, highlight=False)
    return 0
