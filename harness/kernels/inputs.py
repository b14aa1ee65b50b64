"""What decides a guest kernel build: the pinned base, the patch series, the config fragments, the compiler, the
make flags and environment, and the sources of the test modules (contig_bench, zero_scan).

The build key is the sha256 of all of them (see :func:`compute_key`); a cache hit only hashes these inputs.
:func:`snapshot_inputs` copies the exact bytes that were hashed into the build directory, so a build uses what
its key says even if the originals change meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from harness.errors import HarnessError, InputError
from harness.kernels.spec import series_ref
from harness.paths import REPO_ROOT
from harness.process import run_command

# Bump when the build procedure changes in a way that changes outputs (invalidates every cached build).
FORMAT_VERSION = 1

PATCHES_ENV = "BALLOON_TESTBED_PATCHES"
DEFAULT_PATCHES_ROOT = REPO_ROOT / "kernel_patches"
BASE_YAML = DEFAULT_PATCHES_ROOT / "base.yaml"
DEFAULT_FRAGMENT = DEFAULT_PATCHES_ROOT / "config" / "guest.config"
MODULES_DIR = DEFAULT_PATCHES_ROOT / "modules"  # the out-of-tree test modules, built against every kernel

CC = "ccache gcc"
# Extra make arguments for every make invocation; part of the key.
MAKE_FLAGS: tuple[str, ...] = (f"CC={CC}",)
BUILD_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "2026-01-01",
    "KBUILD_BUILD_USER": "testbed",
    "KBUILD_BUILD_HOST": "testbed",
    "CCACHE_MAXSIZE": "5G",
}


@dataclass(frozen=True)
class BaseInfo:
    package: str
    version: str  # Debian package version
    kernel_version: str  # VERSION.PATCHLEVEL.SUBLEVEL
    tarball: Path
    tarball_dir: str


@dataclass(frozen=True)
class PatchFile:
    file: str  # as listed in the series file
    path: Path
    sha256: str
    data: bytes = field(default=b"", repr=False, compare=False)  # the bytes hashed (and applied)

    @property
    def subject(self) -> str:
        """The mail's Subject without its [PATCH ...] tag (folded header lines joined)."""
        m = re.search(rb"^Subject: (.*(?:\n[ \t].*)*)", self.data, re.MULTILINE)
        text = m.group(1).decode("utf-8", "replace").replace("\n", "") if m else self.file
        return re.sub(r"^\[PATCH[^\]]*\]\s*", "", " ".join(text.split()))


@dataclass(frozen=True)
class Series:
    name: str
    dir: Path
    patches: tuple[PatchFile, ...]
    series_sha256: str  # of the series file itself
    series_data: bytes = field(default=b"", repr=False, compare=False)
    total: int = 0  # patches in the whole series (more than len(patches) for a SERIES@N prefix)


@dataclass(frozen=True)
class Fragment:
    path: Path
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def load_base(path: Path = BASE_YAML) -> BaseInfo:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"base kernel pin {path} is missing") from None
    try:
        return BaseInfo(
            package=str(doc["package"]),
            version=str(doc["version"]),
            kernel_version=str(doc["kernel_version"]),
            tarball=Path(doc["tarball"]),
            tarball_dir=str(doc["tarball_dir"]),
        )
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: missing field {exc}") from None


def patches_root(root: Path | str | None = None) -> Path:
    """Directory holding the series directories: the argument, $BALLOON_TESTBED_PATCHES, or kernel_patches/."""
    if root is None:
        root = os.environ.get(PATCHES_ENV) or DEFAULT_PATCHES_ROOT
    return Path(root).expanduser().resolve()


def parse_series_file(text: str, where: str = "series") -> list[str]:
    """Patch file names from a quilt series file, in order (blank lines and # comments ignored)."""
    names: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()  # whole-line and trailing comments
        if not line:
            continue
        tokens = line.split()
        name, opts = tokens[0], tokens[1:]
        if opts and opts != ["-p1"]:
            raise InputError(f"{where}:{lineno}: only '-p1' patches are supported, got {' '.join(opts)!r}")
        if name.startswith("/") or ".." in Path(name).parts:
            raise InputError(f"{where}:{lineno}: patch path {name!r} must stay inside the series directory")
        names.append(name)
    return names


def load_series(ref: str, root: Path | str | None = None) -> Series:
    """The series `ref` names ("name", or "name@N" for its first N patches), read from disk."""
    name, count = series_ref(ref)
    full = _load_whole_series(name, root)
    if count is None:
        return full
    if count > len(full.patches):
        raise InputError(f"patch series {name!r} has {len(full.patches)} patches; {ref!r} asks for the first {count}")
    return replace(full, patches=full.patches[:count])


def load_stack(refs: tuple[str, ...] | list[str], root: Path | str | None = None) -> list[Series]:
    """The series a spec applies, in order.  A SERIES@0 prefix applies nothing and is left out, so it shares
    the key (and the cached build) of the kernel below it."""
    return [s for s in (load_series(ref, root) for ref in refs) if s.patches]


def _load_whole_series(name: str, root: Path | str | None) -> Series:
    root = patches_root(root)
    sdir = root / name
    if not sdir.is_dir():
        raise InputError(f"patch series {name!r}: no directory {sdir}")
    sfile = sdir / "series"
    if not sfile.is_file():
        raise InputError(f"patch series {name!r}: no series file {sfile}")
    data = sfile.read_bytes()
    names = parse_series_file(data.decode("utf-8", "replace"), str(sfile))
    if not names:
        raise InputError(f"patch series {name!r}: {sfile} lists no patches")
    patches = []
    for fname in names:
        p = sdir / fname
        if not p.is_file():
            raise InputError(f"patch series {name!r}: {sfile} lists {fname}, but {p} does not exist")
        pdata = p.read_bytes()
        patches.append(PatchFile(fname, p, hashlib.sha256(pdata).hexdigest(), pdata))
    return Series(name, sdir, tuple(patches), hashlib.sha256(data).hexdigest(), data, total=len(patches))


def load_fragments(fragments: list[Path | str] | None = None) -> list[Fragment]:
    """The default guest.config followed by any extra fragments, in order."""
    paths = [DEFAULT_FRAGMENT] + [Path(f) for f in (fragments or [])]
    out = []
    for p in paths:
        if not p.is_file():
            raise InputError(f"config fragment {p} does not exist")
        out.append(Fragment(p.resolve(), p.read_bytes()))
    return out


def fragment_sha256(frags: list[Fragment]) -> str:
    """sha256 of the fragments' contents concatenated in order (= the file's sha256 for the default alone)."""
    h = hashlib.sha256()
    for f in frags:
        h.update(f.data)
    return h.hexdigest()


def gcc_version() -> str:
    return run_command(["gcc", "--version"]).stdout.splitlines()[0].strip()


def module_source_sha256(mod_dir: Path | None = MODULES_DIR) -> str | None:
    """Hash of the test modules' sources (relative names + contents), or None if absent."""
    if mod_dir is None or not mod_dir.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(mod_dir.rglob("*")):
        if p.is_file() and not _is_build_artifact(p):
            h.update(p.relative_to(mod_dir).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _is_build_artifact(p: Path) -> bool:
    name = p.name
    return (
        name.startswith(".")
        or name.endswith((".o", ".ko", ".mod", ".mod.c", ".mod.o", ".cmd", ".symvers", ".order"))
        or name in ("Module.symvers", "modules.order")
    )


def compute_key(
    base: BaseInfo | dict,
    series: list[Series],
    frags: list[Fragment],
    gcc: str,
    module_sha: str | None,
    make_flags: tuple[str, ...] = MAKE_FLAGS,
) -> str:
    """The build key: sha256 of a canonical JSON of everything that decides the output."""
    doc = {
        "format": FORMAT_VERSION,
        "base": base if isinstance(base, dict) else {
            "package": base.package, "version": base.version, "kernel_version": base.kernel_version},
        "series": [{"name": s.name, "patches": [p.sha256 for p in s.patches]} for s in series],
        "fragments": [f.sha256 for f in frags],
        "gcc": gcc,
        "make_flags": list(make_flags),
        "env": BUILD_ENV,
        "modules": module_sha,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def snapshot_inputs(tmp: Path, series: list[Series], frags: list[Fragment], module_sha: str | None,
                    mod_dir: Path = MODULES_DIR) -> tuple[list[Path], Path | None]:
    """Write the exact bytes that were hashed into the build dir, so the build uses what the key says.

    tmp/series/<name>/ (series file + patches, applied from here), tmp/fragments/NN-<name> (merged from here),
    tmp/modules/build/ (the modules are built from this copy; its hash must still match the key).
    Returns the fragment paths and the module copy (None when there is no module).
    """
    for s in series:
        d = tmp / "series" / s.name
        d.mkdir(parents=True)
        (d / "series").write_bytes(s.series_data)
        for p in s.patches:
            (d / p.file).parent.mkdir(parents=True, exist_ok=True)
            (d / p.file).write_bytes(p.data)
    fdir = tmp / "fragments"
    fdir.mkdir()
    frag_paths = []
    for i, f in enumerate(frags):
        fp = fdir / f"{i:02d}-{f.path.name}"
        fp.write_bytes(f.data)
        frag_paths.append(fp)
    mod_copy = None
    if module_sha is not None:
        mod_copy = tmp / "modules" / "build"
        shutil.copytree(mod_dir, mod_copy,
                        ignore=lambda d, names: [n for n in names if _is_build_artifact(Path(d) / n)])
        if module_source_sha256(mod_copy) != module_sha:
            raise HarnessError(f"{mod_dir} changed while the build started; run the build again")
    return frag_paths, mod_copy
