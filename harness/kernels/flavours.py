"""Kernel flavours: named config fragments in kernel_patches/config/flavours/ that a built spec selects with
``%NAME`` (``base+pg-zeroed%debug-vm``).

A flavour is a config fragment merged after guest.config, so it is part of the build's cache key and its
provenance like any fragment.  A line ``# boot: PARAMS`` in it names boot parameters the flavour needs at
run time too (``page_poison=1`` does nothing without CONFIG_PAGE_POISONING, and the option does nothing
without the parameter); they are appended to the guest's command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.kernels.inputs import patches_root

BOOT_LINE = re.compile(r"^#\s*boot:\s*(?P<params>\S.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Flavour:
    name: str
    fragment: Path
    boot_params: str


def flavours_dir(root: Path | str | None = None) -> Path:
    return patches_root(root) / "config" / "flavours"


def known_flavours(root: Path | str | None = None) -> list[str]:
    d = flavours_dir(root)
    return sorted(p.stem for p in d.glob("*.config")) if d.is_dir() else []


def load_flavour(name: str, root: Path | str | None = None) -> Flavour:
    path = flavours_dir(root) / f"{name}.config"
    if not path.is_file():
        known = ", ".join(known_flavours(root)) or "none"
        raise InputError(f"unknown kernel flavour {name!r} (known: {known}; each is a file "
                         f"{flavours_dir(root)}/NAME.config)")
    m = BOOT_LINE.search(path.read_text())
    return Flavour(name, path, m["params"] if m else "")


def load_flavours(names: tuple[str, ...] | list[str], root: Path | str | None = None) -> list[Flavour]:
    return [load_flavour(n, root) for n in names]
