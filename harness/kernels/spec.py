"""Kernel specs and the guest kernels they resolve to.

A kernel spec string names a guest kernel:

* ``stock`` -- Debian's prebuilt ``linux-image-6.12.*-cloud-amd64-unsigned`` (see stock.py);
* ``base`` or ``base+SERIES[+SERIES...]`` -- the pinned base from kernel_patches/base.yaml with the
  named patch series applied in order, built and cached (see build.py); ``SERIES@N`` applies only the
  first N patches of a series (``base+zeroing-stats+pg-zeroed@3``; ``@0`` none of them);
* a path to a bzImage or an ELF vmlinux (it must exist; contains a ``/``);
* a named stack from kernel_patches/stacks.yaml (``seed002``), alone or extended like a spec
  (``seed002+my-fix``, ``seed002%debug-vm``): it stands for the stack's spec (see stacks.py).

A built spec may end in flavours, ``base+pg-zeroed%debug-vm%page-poison``: each names a config fragment
(and maybe boot parameters) in kernel_patches/config/flavours/ (see flavours.py), part of the build key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from harness.errors import InputError
from harness.kernels.record import KernelRecord
from harness.kernels.stacks import expand
from harness.validation import problem

FLAVOUR_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SERIES_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<count>\d+))?$")


def series_ref(ref: str) -> tuple[str, int | None]:
    """"name" -> (name, None); "name@N" -> (name, N): the first N patches."""
    m = SERIES_REF.match(ref)
    if not m:
        raise InputError(f"bad series name {ref!r} (expected NAME or NAME@N)")
    return m["name"], None if m["count"] is None else int(m["count"])


@dataclass(frozen=True)
class KernelSpec:
    text: str
    kind: str  # "stock", "build", "file" or "tree" (a developer's checkout, see kernels.build)
    series: tuple[str, ...] = ()
    path: Path | None = None
    flavours: tuple[str, ...] = ()
    stack: str | None = None  # the named stack the spec starts with (kernel_patches/stacks.yaml), if any
    expanded: str | None = None  # the spec with that name replaced by the stack's spec

    @property
    def slug(self) -> str:
        """A file-name-safe name for this spec."""
        if self.kind == "file" and self.path is not None:
            # Images are often all called bzImage: the hash of the full path tells them apart.
            digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:8]
            return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{self.path.name}-{digest}")
        # "%" would need escaping in URLs of the report: flavours become "~" (unreserved everywhere)
        return re.sub(r"[^A-Za-z0-9._+@~-]", "_", self.text.replace("%", "~"))

    def plus(self, ref: str) -> KernelSpec:
        """This built spec with one more series (SERIES or SERIES@N) on top, as `SPEC+ref` would parse."""
        name = series_ref(ref)[0]
        if self.kind != "build":
            raise InputError(f"kernel spec {self.text!r}: series go only on kernels the harness builds")
        if name in (series_ref(r)[0] for r in self.series):
            raise InputError(f"kernel spec {self.text!r}+{ref}: a series is named twice")

        def on_top(text: str) -> str:
            head, *flavours = text.split("%")
            return "%".join([f"{head}+{ref}", *flavours])
        return replace(self, text=on_top(self.text), series=(*self.series, ref),
                       expanded=None if self.expanded is None else on_top(self.expanded))


@dataclass
class GuestKernel:
    """A bootable kernel and what the bundle records about it."""

    spec: KernelSpec
    bzimage: Path
    version: str | None  # `uname -r` as built or packaged, when known before boot
    modules: list[Path] = field(default_factory=list)  # .ko files to load at boot, in order
    extra_files: dict[str, Path] = field(default_factory=dict)  # initramfs path -> host file
    record: KernelRecord = field(default_factory=KernelRecord)  # manifest `kernels[]` entry
    cmdline: str = ""  # boot parameters the kernel's flavours need, appended to the machine's
    boot_image: Path | None = None  # what QEMU boots instead of the bzImage (the stock kernel's PVH vmlinux)


BZIMAGE_MAGIC_OFFSET = 0x202  # the x86 boot protocol's "HdrS" header signature
ELF_MAGIC = b"\x7fELF"


def check_kernel_image(path: Path) -> None:
    """InputError naming the file unless it is an x86 bzImage or an ELF vmlinux (what QEMU -kernel boots)."""
    try:
        with path.open("rb") as f:
            head = f.read(BZIMAGE_MAGIC_OFFSET + 4)
    except OSError as exc:
        raise InputError(f"kernel image {path}: cannot read it: {exc.strerror or exc}") from None
    if head[:4] == ELF_MAGIC or head[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] == b"HdrS":
        return
    raise InputError(f"kernel image {path}: not a bzImage or an ELF vmlinux")


def file_spec(text: str) -> KernelSpec:
    """The spec of a kernel image file (a bzImage or an ELF vmlinux, checked)."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(f"kernel spec {text!r}: no such kernel image file")
    check_kernel_image(path)
    return KernelSpec(text, "file", path=path.resolve())


def parse_kernel_spec(text: str) -> KernelSpec:
    text = text.strip()
    if not text:
        raise InputError("kernel spec is empty")
    if text == "stock":
        return KernelSpec(text, "stock")
    if "/" in text or text.endswith("bzImage"):
        return file_spec(text)
    typed = text
    text, stack = expand(text)
    text, *flavours = text.split("%")
    if flavours and not text.startswith("base"):
        raise InputError(f"kernel spec {'%'.join([text, *flavours])!r}: flavours (%NAME) apply only to "
                         "kernels the harness builds (base[+SERIES...])")
    for name in flavours:
        if not FLAVOUR_NAME.match(name):
            raise InputError(f"kernel spec {'%'.join([text, *flavours])!r}: bad flavour name {name!r}")
    if len(set(flavours)) != len(flavours):
        raise InputError(f"kernel spec {'%'.join([text, *flavours])!r}: a flavour is named twice")
    full = "%".join([text, *flavours])
    parts = text.split("+")
    if parts[0] != "base":
        raise InputError(
            f"kernel spec {full!r}: expected 'stock', 'base', 'base+SERIES[+SERIES...]', a named stack "
            "(harness kernel list --stacks) or a path to a bzImage"
        )
    series = tuple(parts[1:])
    try:
        names = [series_ref(ref)[0] for ref in series]
    except InputError as exc:
        raise InputError(f"kernel spec {full!r}: {exc}") from None
    if len(set(names)) != len(names):
        raise InputError(f"kernel spec {full!r}: a series is named twice")
    if stack is not None:
        return KernelSpec(typed, "build", series=series, flavours=tuple(flavours), stack=stack, expanded=full)
    return KernelSpec(full, "build", series=series, flavours=tuple(flavours))


STOCK = KernelSpec("stock", "stock")


def _kernel_spec(value: Any) -> KernelSpec:
    if isinstance(value, KernelSpec):
        return value
    if not isinstance(value, str):
        raise problem(f"a kernel spec is a string (stock, base+SERIES..., a named stack), got {value!r}")
    try:
        return parse_kernel_spec(value)
    except InputError as exc:
        raise problem(str(exc)) from None


# A kernel spec in a model (scenario, nightly plan, bisect state): parsed when the file is read, its text
# when it is written.  Specs are parsed once, at the edge: here, and by the command line's options.
KernelSpecField = Annotated[KernelSpec, PlainValidator(_kernel_spec), PlainSerializer(lambda s: s.text),
                            WithJsonSchema({"type": "string"})]
