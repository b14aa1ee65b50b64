"""From a kernel spec to a bootable kernel: fetch the stock kernel, build a base[+SERIES] kernel, or take an image file."""

from __future__ import annotations

import hashlib

from harness.errors import InputError
from harness.kernels.build import build_kernel
from harness.kernels.flavours import load_flavours
from harness.kernels.inputs import load_series
from harness.kernels.record import KernelRecord
from harness.kernels.spec import GuestKernel, KernelSpec
from harness.kernels.stock import fetch_stock_kernel


def resolve_kernel(spec: KernelSpec, progress=None) -> GuestKernel:
    """Fetch or build what the spec names (cached) and return the bootable kernel."""
    if spec.kind == "stock":
        return fetch_stock_kernel(spec, progress)
    if spec.kind == "build":
        return build_kernel(spec, progress=progress)
    assert spec.path is not None
    return GuestKernel(
        spec=spec,
        bzimage=spec.path,
        version=None,
        record=KernelRecord(spec=spec.text, slug=spec.slug, sha256=hashlib.sha256(spec.path.read_bytes()).hexdigest()),
    )


def image_digest(kernel: GuestKernel) -> str:
    """One sha256 of what boots: the image, every file put into the guest's initramfs, the boot parameters.
    Two kernels with the same digest behave the same (bisect reuses a verdict on it)."""
    h = hashlib.sha256()
    h.update(hashlib.sha256((kernel.boot_image or kernel.bzimage).read_bytes()).digest())
    for guest, host in sorted(kernel.extra_files.items()):
        h.update(guest.encode() + b"\0" + hashlib.sha256(host.read_bytes()).digest())
    h.update(b"\0" + kernel.cmdline.encode())
    return h.hexdigest()


def check_available(spec: KernelSpec) -> None:
    """InputError when the spec names something that does not exist (a patch series), before anything starts."""
    if spec.kind == "build":
        try:
            load_flavours(spec.flavours)
        except InputError as exc:
            raise InputError(f"kernel spec {spec.text!r}: {exc}") from None
        for name in spec.series:
            try:
                load_series(name)
            except InputError as exc:
                raise InputError(f"kernel spec {spec.text!r}: {exc}") from None
