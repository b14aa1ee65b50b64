"""The `stock` kernel: Debian's prebuilt linux-image-6.12.*-cloud-amd64-unsigned.

Its virtio_net and virtio_balloon drivers are modules; they and their dependencies go into the
initramfs and are loaded by init.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.kernels.cache import flock
from harness.kernels.record import KernelRecord
from harness.kernels.spec import GuestKernel, KernelSpec
from harness.paths import cache_root
from harness.process import run_command

PACKAGE_PATTERN = re.compile(r"^linux-image-(6\.12\.\d+\+deb\d+-cloud-amd64)-unsigned$")
WANTED_MODULES = ["virtio_balloon", "virtio_net", "virtio-rng"]


def newest_stock_release() -> str:
    """The newest 6.12 cloud kernel release apt knows about, e.g. 6.12.117+deb12-cloud-amd64."""
    out = run_command(["apt-cache", "search", "--names-only", r"^linux-image-6\.12\..*-cloud-amd64-unsigned$"]).stdout
    releases = [m.group(1) for line in out.splitlines() if (m := PACKAGE_PATTERN.match(line.split(" ")[0]))]
    if not releases:
        raise HarnessError("apt knows no linux-image-6.12.*-cloud-amd64-unsigned package (run apt-get update)")
    return max(releases, key=lambda r: [int(x) for x in re.findall(r"\d+", r.split("+")[0])])


def _module_closure(moddir: Path, names: list[str]) -> list[Path]:
    """Module files for `names` plus their dependencies, dependencies first."""
    index = {_key(p): p for p in moddir.rglob("*.ko*")}
    ordered: list[Path] = []

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        path = index.get(key)
        if path is None:
            raise HarnessError(f"stock kernel has no module {name} under {moddir}")
        if path in ordered:
            return
        for dep in _depends(path):
            visit(dep)
        ordered.append(path)

    for n in names:
        visit(n)
    return ordered


def _depends(module: Path) -> list[str]:
    """The modules `module` depends on (modinfo), with underscores for dashes."""
    depends = run_command(["modinfo", "-F", "depends", str(module)]).stdout.strip()
    return [d.replace("-", "_") for d in depends.split(",") if d]


def boot_module_lanes(modules: list[Path], depends: Callable[[Path], list[str]] = _depends) -> list[list[Path]]:
    """`modules` (dependencies first) split into lanes that share no module, each in dependency order: init
    loads the lanes at the same time.  A module joins the lanes of all its dependencies, merged."""
    lanes: list[list[Path]] = []
    for module in modules:
        names = set(depends(module))
        joined = [lane for lane in lanes if any(_key(m) in names for m in lane)]
        lanes = [lane for lane in lanes if lane not in joined]
        lanes.append([m for lane in joined for m in lane] + [module])
    return lanes


def _key(module: Path) -> str:
    return module.name.split(".ko")[0].replace("-", "_")


def _download(release: str, tmpdir: Path) -> tuple[Path, Path]:
    """The stock package of `release` downloaded and unpacked under `tmpdir`: (the .deb, the tree)."""
    run_command(["apt-get", "download", f"linux-image-{release}-unsigned"], cwd=tmpdir)
    (deb,) = tmpdir.glob("*.deb")
    tree = tmpdir / "tree"
    run_command(["dpkg-deb", "-x", deb, tree])
    return deb, tree


def _copy_modules(tree: Path, release: str, names: list[str], out: Path) -> list[str]:
    """`names` and their dependencies, decompressed into `out` (dependencies first); their file names."""
    out.mkdir(parents=True, exist_ok=True)
    modules = []
    for path in _module_closure(tree / "lib" / "modules" / release, names):
        target = out / path.name.split(".ko")[0]
        target = target.with_name(target.name + ".ko")
        if path.name.endswith(".xz"):
            target.write_bytes(run_command(["xz", "-dc", path], binary=True).stdout)
        elif path.name.endswith(".zst"):
            target.write_bytes(run_command(["zstd", "-dc", path], binary=True).stdout)
        else:
            shutil.copy(path, target)
        modules.append(target.name)
    return modules


def _unpack(release: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmpdir = Path(tmp)
        deb, tree = _download(release, tmpdir)
        out = tmpdir / "out"
        out.mkdir()
        shutil.copy(tree / "boot" / f"vmlinuz-{release}", out / "bzImage")
        shutil.copy(tree / "boot" / f"config-{release}", out / "config")
        modules = _copy_modules(tree, release, WANTED_MODULES, out / "modules")
        (out / "stock.json").write_text(json.dumps({"package": f"linux-image-{release}-unsigned", "deb": deb.name,
                                                    "release": release, "modules": modules}, indent=1))
        out.rename(dest)


def stock_modules(kernel: GuestKernel, names: list[str]) -> list[Path]:
    """More modules of the stock `kernel` (and their dependencies, first), unpacked once into its cache
    directory: the KVM runner VM loads kvm and overlay from the same package it boots."""
    dest = kernel.bzimage.parent / ("modules-" + "-".join(sorted(names)))
    release = kernel.version
    if release is None:
        raise HarnessError(f"{kernel.bzimage} is not an unpacked stock kernel")
    with flock(f"stock-{release}"):
        if not (dest / "order").exists():
            _unpack_modules(release, names, dest)
    return [dest / m for m in (dest / "order").read_text().split()]


def _unpack_modules(release: str, names: list[str], dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmpdir = Path(tmp)
        _deb, tree = _download(release, tmpdir)
        out = tmpdir / "out"
        modules = _copy_modules(tree, release, names, out)
        (out / "order").write_text("".join(f"{m}\n" for m in modules))
        shutil.rmtree(dest, ignore_errors=True)
        out.rename(dest)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def pvh_vmlinux(dest: Path) -> Path | None:
    """The stock kernel's uncompressed vmlinux, extracted once from its bzImage, for a PVH direct boot.

    Debian builds the cloud kernel with CONFIG_PVH=y and zstd compression.  QEMU boots such an ELF
    through its PVH entry point, so the guest skips decompressing ~57 MB of kernel under TCG (0.5-0.8 s
    of every boot here).  The kernel that runs is the same; None when the kernel cannot boot that way.
    """
    vmlinux = dest / "vmlinux"
    if vmlinux.exists():
        return vmlinux
    if "CONFIG_PVH=y" not in (dest / "config").read_text().splitlines():
        return None
    data = (dest / "bzImage").read_bytes()
    start = data.find(ZSTD_MAGIC)
    if start < 0:
        return None
    # zstd stops with an error at the bzImage's trailing bytes after the frame; the frame itself is whole.
    out = run_command(["zstd", "-dcq"], input=data[start:], binary=True, check=False).stdout
    if not out.startswith(b"\x7fELF"):
        return None
    tmp = dest / "vmlinux.tmp"
    tmp.write_bytes(out)
    tmp.rename(vmlinux)
    return vmlinux


def fetch_stock_kernel(spec: KernelSpec, progress=None) -> GuestKernel:
    """Download (once) and unpack the newest stock cloud kernel."""
    release = newest_stock_release()
    dest = cache_root() / "stock" / release
    # Runs started together on a fresh machine (CI jobs on one runner) unpack it once: the others wait.
    with flock(f"stock-{release}"):
        if not (dest / "stock.json").exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if progress is not None:
                progress.console.print(f"downloading stock kernel {release}")
            _unpack(release, dest)
        vmlinux = pvh_vmlinux(dest)
    info = json.loads((dest / "stock.json").read_text())
    bzimage = dest / "bzImage"
    return GuestKernel(
        spec=spec,
        bzimage=bzimage,
        boot_image=vmlinux,
        version=release,
        modules=[dest / "modules" / m for m in info["modules"]],
        record=KernelRecord(spec=spec.text, slug=spec.slug, version=release, package=info["package"],
                            sha256=hashlib.sha256(bzimage.read_bytes()).hexdigest(), config=str(dest / "config"),
                            boot="pvh vmlinux extracted from the bzImage" if vmlinux else "bzImage"),
    )
