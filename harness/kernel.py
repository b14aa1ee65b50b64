"""Kernel specs and the guest kernels they resolve to.

A kernel spec string names a guest kernel:

* ``stock`` -- Debian's prebuilt ``linux-image-6.12.*-cloud-amd64-unsigned`` (see kernel_stock.py);
* ``base`` or ``base+SERIES[+SERIES...]`` -- the pinned base from kernel_patches/base.yaml with the
  named patch series applied in order, built and cached (see kernel_build.py);
* a path to any bzImage (it must exist; contains a ``/``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError

SERIES_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class KernelSpec:
    text: str
    kind: str  # "stock", "build", "file" or "tree" (a developer's checkout, see kernel_build)
    series: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def slug(self) -> str:
        """A file-name-safe name for this spec."""
        if self.kind == "file":
            # Images are often all called bzImage: the hash of the full path tells them apart.
            digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:8]
            return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{self.path.name}-{digest}")
        return re.sub(r"[^A-Za-z0-9._+-]", "_", self.text)


@dataclass
class GuestKernel:
    """A bootable kernel and what the bundle records about it."""

    spec: KernelSpec
    bzimage: Path
    version: str | None  # `uname -r` as built or packaged, when known before boot
    modules: list[Path] = field(default_factory=list)  # .ko files to load at boot, in order
    extra_files: dict[str, Path] = field(default_factory=dict)  # initramfs path -> host file
    record: dict = field(default_factory=dict)  # manifest `kernels[]` entry
    boot_image: Path | None = None  # what QEMU boots instead of the bzImage (the stock kernel's PVH vmlinux)


def parse_kernel_spec(text: str) -> KernelSpec:
    text = text.strip()
    if not text:
        raise InputError("kernel spec is empty")
    if text == "stock":
        return KernelSpec(text, "stock")
    if "/" in text or text.endswith("bzImage"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"kernel spec {text!r}: no such kernel image file")
        return KernelSpec(text, "file", path=path.resolve())
    parts = text.split("+")
    if parts[0] != "base":
        raise InputError(
            f"kernel spec {text!r}: expected 'stock', 'base', 'base+SERIES[+SERIES...]' or a path to a bzImage"
        )
    series = tuple(parts[1:])
    for name in series:
        if not SERIES_NAME.match(name):
            raise InputError(f"kernel spec {text!r}: bad series name {name!r}")
    if len(set(series)) != len(series):
        raise InputError(f"kernel spec {text!r}: a series is named twice")
    return KernelSpec(text, "build", series=series)


def resolve_kernel(spec: KernelSpec, progress=None) -> GuestKernel:
    """Fetch or build what the spec names (cached) and return the bootable kernel."""
    if spec.kind == "stock":
        from harness.kernel_stock import fetch_stock_kernel

        return fetch_stock_kernel(spec, progress)
    if spec.kind == "build":
        from harness.kernel_build import build_kernel

        return build_kernel(spec, progress=progress)
    import hashlib

    data = spec.path.read_bytes()
    return GuestKernel(
        spec=spec,
        bzimage=spec.path,
        version=None,
        record={
            "spec": spec.text,
            "slug": spec.slug,
            "version": None,
            "sha256": hashlib.sha256(data).hexdigest(),
            "cache_key": None,
            "config": None,
            "config_fragment_sha256": None,
            "series": [],
        },
    )
