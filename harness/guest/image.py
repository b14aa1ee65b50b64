"""The guest initramfs: busybox, dropbear, the init script, the probes and the kernel's boot modules.

Everything comes from Debian packages on the host (busybox-static, dropbear-bin, gcc for the probes).
Images are cached by a hash of every input file, so an unchanged image is never rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.guest.keys import SshKeys, ssh_keys
from harness.kernels.spec import GuestKernel
from harness.kernels.stock import boot_module_lanes
from harness.paths import REPO_ROOT, cache_root
from harness.process import run_command

GUEST_DIR = REPO_ROOT / "guest_images"
PROBES = ["memtouch", "memdirty", "faultscale"]
IMAGE_FORMAT = "2"  # bump when the layout below changes


def _shared_libs(binary: str) -> list[Path]:
    """The dynamic loader and libraries a host binary needs (from ldd)."""
    libs = []
    for line in run_command(["ldd", binary]).stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _host_inputs() -> dict[str, Path]:
    """Host files copied into every image: image path -> host path."""
    busybox = Path("/bin/busybox")
    dropbear = shutil.which("dropbear") or "/usr/sbin/dropbear"
    for tool, package in ((busybox, "busybox-static"), (Path(dropbear), "dropbear-bin")):
        if not Path(tool).exists():
            raise HarnessError(f"{tool} is missing: apt-get install {package}")
    ldd = run_command(["ldd", busybox], check=False)
    if "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        raise HarnessError("/bin/busybox is not static: apt-get install busybox-static")
    files = {"/bin/busybox": busybox, "/usr/sbin/dropbear": Path(dropbear)}
    for lib in _shared_libs(dropbear):
        files[str(lib)] = lib.resolve()
    return files


def _compile_probes(out: Path) -> dict[str, Path]:
    probes = {}
    for name in PROBES:
        exe = out / name
        run_command(["gcc", "-static", "-O2", "-Wall", "-o", exe, GUEST_DIR / "probes" / f"{name}.c"])
        probes[f"/usr/bin/{name}"] = exe
    return probes


FSTAB = """\
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
devtmpfs /dev devtmpfs defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
tmpfs /run tmpfs defaults 0 0
debugfs /sys/kernel/debug debugfs defaults 0 0
tracefs /sys/kernel/tracing tracefs defaults 0 0
"""


def _etc_files(keys: SshKeys, kernel: GuestKernel) -> dict[str, str]:
    boot_modules = "".join(" ".join(m.name for m in lane) + "\n" for lane in boot_module_lanes(kernel.modules))
    return {
        "/etc/fstab": FSTAB,
        "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "/etc/group": "root:x:0:\ntty:x:5:\n",
        "/etc/shadow": "root:*:19000:0:99999:7:::\n",
        "/etc/shells": "/bin/sh\n",
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\n",
        "/etc/boot-modules": boot_modules,
        "/root/.ssh/authorized_keys": keys.client_pub + "\n",
    }


def _digest(files: dict[str, Path], texts: dict[str, str], sources: list[Path]) -> str:
    h = hashlib.sha256(IMAGE_FORMAT.encode())
    # Which probes are compiled matters as much as their sources: an image keyed on the sources alone was
    # once reused without faultscale in it.
    h.update(" ".join(PROBES).encode() + b"\0")
    for dest in sorted(files):
        h.update(dest.encode() + b"\0" + hashlib.sha256(files[dest].read_bytes()).digest())
    for dest in sorted(texts):
        h.update(dest.encode() + b"\0" + texts[dest].encode())
    for src in sources:
        h.update(str(src.relative_to(REPO_ROOT)).encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:20]


def build_image(kernel: GuestKernel, extra_files: dict[str, Path] | None = None) -> Path:
    """The initramfs for `kernel` plus `extra_files` (guest path -> host file: a scenario's own files, the
    kernel's selftests), cached by content; returns the cpio path."""
    keys = ssh_keys()
    files = _host_inputs()
    files["/etc/dropbear/dropbear_ed25519_host_key"] = keys.host_key
    for module in kernel.modules:
        files[f"/lib/modules/boot/{module.name}"] = module
    files.update(kernel.extra_files)
    for dest, src in (extra_files or {}).items():
        if dest in files or dest in ("/init", *(f"/usr/bin/{p}" for p in PROBES)):
            raise HarnessError(f"guest file {dest} would replace one the harness needs: choose another path")
        files[dest] = src
    files["/init"] = GUEST_DIR / "init"
    texts = _etc_files(keys, kernel)
    sources = sorted((GUEST_DIR / "probes").iterdir())
    key = _digest(files, texts, sources)

    def make(root: Path) -> None:
        probes = _compile_probes(root.parent)
        _stage(root, {**files, **probes}, texts)

    return cached_cpio(f"initramfs-{key}", make)


def cached_cpio(name: str, make: Callable[[Path], None]) -> Path:
    """The image images/NAME.cpio, made once: `make(root)` fills the directory tree `root`."""
    images = cache_root() / "images"
    image = images / f"{name}.cpio"
    if image.exists():
        return image
    images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=images) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        make(root)
        pack_cpio(root, Path(tmp) / "image.cpio")
        os.rename(Path(tmp) / "image.cpio", image)
    return image


def _stage(root: Path, files: dict[str, Path], texts: dict[str, str]) -> None:
    for d in ("proc", "sys", "dev", "tmp", "run", "root/.ssh", "var", "etc/dropbear", "sbin", "usr/bin", "usr/sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/run").symlink_to("/run")
    for dest, src in files.items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
    for dest, text in texts.items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for applet in run_command([files["/bin/busybox"], "--list-full"]).stdout.split():
        link = root / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (root / "root").chmod(0o700)
    (root / "root/.ssh").chmod(0o700)
    (root / "root/.ssh/authorized_keys").chmod(0o600)
    (root / "etc/dropbear/dropbear_ed25519_host_key").chmod(0o600)
    (root / "init").chmod(0o755)


def pack_cpio(root: Path, out: Path) -> None:
    """An uncompressed newc cpio: the kernel needs no decompressor, which boots faster under TCG."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    with out.open("wb") as f:
        run_command(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], input="\n".join(names).encode(),
                    cwd=root, stdout=f, binary=True, what="cpio")
