"""Build guest kernels: pinned base + quilt-style patch series + config fragments, cached.

Layout under ``cache_root()/kernel/``::

    src/linux-<version>/     the base tarball extracted once and committed as a git repo (tag ``base``);
                             pristine, never built in
    trees/<key>/             a git worktree per build key; the key's series are applied there with ``git am``
    trees/<key>.ready        written once every patch applied (a worktree without it is half-made: recreated)
    trees/ext-<key>/         O= output directory for ``--tree`` builds of a developer's own checkout
    builds/<key>/            published outputs: bzImage, config, System.map, series/, modules/, build.json, build.log
    builds/.tmp-<key>/       a build in progress (renamed to builds/<key> when complete, so never a cache hit)
    failed/<key>/            build.log (and config) of the last failed build of a key
    locks/                   flock files: one per key, one for the base repo

The build key is the sha256 of every input that decides the output (see :func:`compute_key`); a cache hit
only hashes the inputs and reads ``builds/<key>/build.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from harness.errors import HarnessError, InputError
from harness.kernel import GuestKernel, KernelSpec, parse_kernel_spec
from harness.paths import REPO_ROOT, cache_root

# Bump when the build procedure changes in a way that changes outputs (invalidates every cached build).
FORMAT_VERSION = 1

PATCHES_ENV = "BALLOON_TESTBED_PATCHES"
DEFAULT_PATCHES_ROOT = REPO_ROOT / "kernel_patches"
BASE_YAML = DEFAULT_PATCHES_ROOT / "base.yaml"
DEFAULT_FRAGMENT = DEFAULT_PATCHES_ROOT / "config" / "guest.config"
CONTIG_BENCH_DIR = DEFAULT_PATCHES_ROOT / "modules" / "contig_bench"
CONTIG_BENCH_GUEST_PATH = "/lib/modules/contig_bench.ko"

CC = "ccache gcc"
# Extra make arguments for every make invocation; part of the key.
MAKE_FLAGS: tuple[str, ...] = (f"CC={CC}",)
BUILD_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "2026-01-01",
    "KBUILD_BUILD_USER": "testbed",
    "KBUILD_BUILD_HOST": "testbed",
    "CCACHE_MAXSIZE": "5G",
}
GIT_IDENTITY = ["-c", "user.name=testbed", "-c", "user.email=testbed@localhost", "-c", "gc.auto=0"]
GIT_DATE = "2026-01-01T00:00:00+00:00"

# Compile units counted for the progress bar: kbuild's quiet-mode lines ("  CC      mm/page_alloc.o").
UNIT_LINE = re.compile(r"^\s+(CC|CC \[M\]|AS|LD|LD \[M\]|AR|HOSTCC|HOSTLD|CPP|LDS|OBJCOPY|MODPOST|GEN|"
                       r"UPD|SYSHDR|SYSTBL|VDSO|VDSO2C|RELOCS|ZOFFSET|VOFFSET|MKPIGGY|BUILD|POLICY|"
                       r"MKCAP|WRAP|KSYMS|SORTTAB|NM|CHKSHA1|DESCEND|INSTALL|CALL|GZIP)\s")
# Expected number of such lines for a cold build of this config when no earlier build.json knows better
# (measured 1959 for base with guest.config as of 2026-11-22; see build.json "compile_units").
DEFAULT_COMPILE_UNITS = 1960


# ----------------------------------------------------------------------------------------------------------
# inputs


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


@dataclass(frozen=True)
class Series:
    name: str
    dir: Path
    patches: tuple[PatchFile, ...]
    series_sha256: str  # of the series file itself
    series_data: bytes = field(default=b"", repr=False, compare=False)


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


def load_series(name: str, root: Path | str | None = None) -> Series:
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
    return Series(name, sdir, tuple(patches), hashlib.sha256(data).hexdigest(), data)


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
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HarnessError(f"cannot run gcc --version: {exc}") from None
    return out.splitlines()[0].strip()


def module_source_sha256(mod_dir: Path | None = CONTIG_BENCH_DIR) -> str | None:
    """Hash of the contig_bench module sources (relative names + contents), or None if absent."""
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
        "contig_bench": module_sha,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def snapshot_inputs(tmp: Path, series: list[Series], frags: list[Fragment], module_sha: str | None,
                    mod_dir: Path = CONTIG_BENCH_DIR) -> tuple[list[Path], Path | None]:
    """Write the exact bytes that were hashed into the build dir, so the build uses what the key says.

    tmp/series/<name>/ (series file + patches, applied from here), tmp/fragments/NN-<name> (merged from here),
    tmp/modules/contig_bench-build/ (the module is built from this copy; its hash must still match the key).
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
        mod_copy = tmp / "modules" / "contig_bench-build"
        shutil.copytree(mod_dir, mod_copy,
                        ignore=lambda d, names: [n for n in names if _is_build_artifact(Path(d) / n)])
        if module_source_sha256(mod_copy) != module_sha:
            raise HarnessError(f"{mod_dir} changed while the build started; run the build again")
    return frag_paths, mod_copy


# ----------------------------------------------------------------------------------------------------------
# cache layout


def kernel_cache() -> Path:
    d = cache_root() / "kernel"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _flock(name: str):
    d = kernel_cache() / "locks"
    d.mkdir(exist_ok=True)
    with open(d / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_build(key: str) -> dict | None:
    bdir = kernel_cache() / "builds" / key
    try:
        info = json.loads((bdir / "build.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not (bdir / "bzImage").is_file() or info.get("key") != key:
        return None
    return info


def _guest_kernel(spec: KernelSpec, info: dict) -> GuestKernel:
    bdir = kernel_cache() / "builds" / info["key"]
    extra = {guest: bdir / rel for guest, rel in info.get("extra_files", {}).items()}
    record = dict(info["record"])
    record["spec"] = spec.text
    record["slug"] = info["record"]["slug"] if spec.kind == "tree" else spec.slug
    record["config"] = str(bdir / "config")
    return GuestKernel(
        spec=spec,
        bzimage=bdir / "bzImage",
        version=info.get("kernelrelease"),
        modules=[],
        extra_files=extra,
        record=record,
    )


def list_cached() -> list[dict]:
    """build.json of every published build (plus ``dir`` and ``bzimage_size``), oldest first."""
    out = []
    bdir = kernel_cache() / "builds"
    if not bdir.is_dir():
        return out
    for d in bdir.iterdir():
        if d.name.startswith("."):
            continue
        info = _load_build(d.name)
        if info is None:
            continue
        info["dir"] = str(d)
        info["bzimage_size"] = (d / "bzImage").stat().st_size
        out.append(info)
    out.sort(key=lambda i: i.get("built_at", ""))
    return out


# ----------------------------------------------------------------------------------------------------------
# progress / status


class _Reporter:
    """Status lines and the compile progress bar, on the caller's rich Progress or our own (stderr)."""

    def __init__(self, progress=None, quiet: bool = False):
        self.progress = progress
        self.own = None
        self.quiet = quiet

    def __enter__(self):
        if self.progress is None and not self.quiet:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            self.own = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=False)
            self.own.__enter__()
            self.progress = self.own
        return self

    def __exit__(self, *exc):
        if self.own is not None:
            self.own.__exit__(*exc)

    @contextlib.contextmanager
    def status(self, text: str):
        """An indeterminate task shown while a step runs (removed after)."""
        if self.progress is None:
            yield
            return
        task = self.progress.add_task(text, total=None)
        try:
            yield
        finally:
            self.progress.remove_task(task)

    def log(self, text: str):
        if self.progress is not None:
            self.progress.console.log(text)

    def add(self, text: str, total: int):
        return self.progress.add_task(text, total=total) if self.progress is not None else None

    def update(self, task, **kw):
        if task is not None and self.progress is not None:
            self.progress.update(task, **kw)


# ----------------------------------------------------------------------------------------------------------
# running things


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None, what: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, errors="replace")
    except OSError as exc:
        raise HarnessError(f"{what or cmd[0]}: cannot run {cmd[0]}: {exc}") from None
    if check and res.returncode != 0:
        out = (res.stdout + res.stderr).strip()
        raise HarnessError(f"{what or ' '.join(cmd)} failed (exit {res.returncode}):\n{_tail(out, 30)}")
    return res


def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def _git(repo: Path, *args: str, check: bool = True, what: str | None = None, env=None):
    return _run(["git", *GIT_IDENTITY, "-C", str(repo), *args], check=check, what=what, env=env)


def _build_env(basedir: Path | None) -> dict:
    env = dict(os.environ)
    env.update(BUILD_ENV)
    env["CCACHE_DIR"] = str(cache_root() / "ccache")
    if basedir is not None:
        env["CCACHE_BASEDIR"] = str(basedir)
    else:
        env.pop("CCACHE_BASEDIR", None)
    env["LC_ALL"] = "C"
    return env


def _apt_install(package: str):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", package]
    if os.geteuid() != 0 and shutil.which("sudo"):
        cmd = ["sudo", "-n", *cmd]
    _run(cmd, env=env, what=f"apt-get install -y {package}")


def _ensure_ccache():
    if shutil.which("ccache") is None:
        _apt_install("ccache")
        if shutil.which("ccache") is None:
            raise HarnessError("ccache is still missing after apt-get install ccache")


def _dpkg_version(package: str) -> str | None:
    res = _run(["dpkg-query", "-W", "-f", "${Status}\t${Version}", package], check=False)
    if res.returncode != 0:
        return None
    status, _, version = res.stdout.partition("\t")
    return version.strip() if status.endswith(" installed") else None


def _check_package(base: BaseInfo, rep: _Reporter):
    if not base.tarball.is_file():
        with rep.status(f"installing {base.package} (apt-get)"):
            _apt_install(base.package)
        if not base.tarball.is_file():
            raise HarnessError(f"apt-get install {base.package} did not provide {base.tarball}")
    installed = _dpkg_version(base.package)
    if installed != base.version:
        raise HarnessError(
            f"base kernel pin mismatch: kernel_patches/base.yaml pins {base.package} {base.version}, "
            f"but dpkg reports {installed or 'not installed'}; install the pinned version "
            f"(apt-get install {base.package}={base.version}) or update base.yaml deliberately"
        )


def _makefile_version(makefile: Path) -> str:
    vals = {}
    for line in makefile.read_text(errors="replace").splitlines()[:10]:
        m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\S*)", line)
        if m:
            vals[m.group(1)] = m.group(2)
    return f"{vals.get('VERSION')}.{vals.get('PATCHLEVEL')}.{vals.get('SUBLEVEL')}"


def ensure_base_repo(base: BaseInfo | None = None, progress=None) -> Path:
    """The extracted base as a git repo with tag ``base`` (extract + commit once, ~30 s)."""
    base = base or load_base()
    src = kernel_cache() / "src" / f"linux-{base.kernel_version}"
    if _base_ready(src):
        return src
    with _Reporter(progress) as rep, _flock("src"):
        if _base_ready(src):
            return src
        _check_package(base, rep)
        src.parent.mkdir(parents=True, exist_ok=True)
        tmp = src.parent / f".tmp-{src.name}"
        for d in (tmp, src):
            if d.exists():
                shutil.rmtree(d)
        tmp.mkdir()
        t0 = time.monotonic()
        with rep.status(f"extracting {base.tarball.name} (linux {base.kernel_version})"):
            _run(["tar", "-xJf", str(base.tarball), "-C", str(tmp), "--strip-components=1",
                  f"{base.tarball_dir}/"], what=f"extracting {base.tarball}")
        found = _makefile_version(tmp / "Makefile")
        if found != base.kernel_version:
            shutil.rmtree(tmp)
            raise HarnessError(
                f"{base.tarball}: Makefile says linux {found}, base.yaml pins {base.kernel_version}")
        env = dict(os.environ, GIT_AUTHOR_DATE=GIT_DATE, GIT_COMMITTER_DATE=GIT_DATE)
        with rep.status(f"committing the base tree to git ({src})"):
            _git(tmp, "init", "-q")
            _git(tmp, "config", "core.autocrlf", "false")
            _git(tmp, "config", "gc.auto", "0")
            _git(tmp, "add", "-A", "-f", ".")
            _git(tmp, "commit", "-q", "--no-verify", "-m",
                 f"{base.package} {base.version} (linux {base.kernel_version})", env=env)
            _git(tmp, "tag", "base")
        tmp.rename(src)
        rep.log(f"base linux {base.kernel_version} extracted in {time.monotonic() - t0:.0f} s: {src}")
    return src


def _base_ready(src: Path) -> bool:
    if not (src / ".git").is_dir() or not (src / "Makefile").is_file():
        return False
    return _git(src, "rev-parse", "-q", "--verify", "refs/tags/base", check=False).returncode == 0


# ----------------------------------------------------------------------------------------------------------
# worktree + patches


def _remove_worktree(src: Path, tree: Path):
    if tree.exists():
        _git(src, "worktree", "remove", "--force", "--force", str(tree), check=False)
        if tree.exists():
            shutil.rmtree(tree)
    _git(src, "worktree", "prune", check=False)


def prepare_tree(src: Path, key: str, series: list[Series], rep: _Reporter, snapshot: Path | None = None) -> Path:
    """trees/<key>: a worktree of the base with the series applied (reused if complete, else recreated)."""
    trees = kernel_cache() / "trees"
    trees.mkdir(exist_ok=True)
    tree = trees / key
    ready = trees / f"{key}.ready"
    if tree.exists() and ready.is_file():
        head = _git(tree, "rev-parse", "HEAD", check=False).stdout.strip()
        dirty = _git(tree, "status", "--porcelain", "--untracked-files=no", check=False)
        if head and head == ready.read_text().strip() and dirty.returncode == 0 and not dirty.stdout.strip():
            return tree
    ready.unlink(missing_ok=True)
    check_series_applies(src, series, rep, snapshot)  # fail fast, before checking out a 1.5 GB worktree
    with _flock("src"):
        with rep.status(f"creating worktree trees/{key[:12]}"):
            _remove_worktree(src, tree)
            _git(src, "worktree", "add", "-q", "--detach", str(tree), "base",
                 what=f"git worktree add {tree}")
    try:
        apply_series(tree, series, rep, snapshot)
    except BaseException:
        with _flock("src"):
            _remove_worktree(src, tree)
        raise
    ready.write_text(_git(tree, "rev-parse", "HEAD").stdout.strip() + "\n")
    return tree


def check_series_applies(src: Path, series: list[Series], rep: _Reporter | None = None,
                         snapshot: Path | None = None):
    """Apply the series in order to a scratch index of the base (no checkout); raise naming the first misfit.

    Uses the same `git apply` machinery `git am` uses, so a series that passes here applies in the worktree.
    """
    if not series:
        return
    rep = rep or _Reporter(quiet=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kb-index-") as td, rep.status("checking that the series apply"):
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(td) / "index"))
        _git(src, "read-tree", "base", env=env, what="git read-tree base")
        for s in series:
            for i, p in enumerate(s.patches, 1):
                ppath = snapshot / s.name / p.file if snapshot is not None else p.path
                res = _git(src, "apply", "--cached", "--verbose", str(ppath), check=False, env=env)
                if res.returncode != 0:
                    out = "\n".join(line for line in (res.stdout + res.stderr).splitlines()
                                    if not line.startswith("Checking patch"))
                    raise HarnessError(
                        f"patch series {s.name!r}: patch {i}/{len(s.patches)} {p.file} ({p.path}) does not apply"
                        f" to the base{' after the series before it' if series.index(s) else ''}:\n"
                        f"{_tail(out.strip(), 40)}")


def apply_series(tree: Path, series: list[Series], rep: _Reporter | None = None, snapshot: Path | None = None):
    """`git am` each patch of each series in order; a patch that does not apply raises HarnessError.

    snapshot: a directory with <series>/<patch file> copies to apply instead of the originals.
    """
    rep = rep or _Reporter(quiet=True)
    env = dict(os.environ, GIT_COMMITTER_DATE=GIT_DATE)
    for s in series:
        with rep.status(f"applying series {s.name} ({len(s.patches)} patches)"):
            for i, p in enumerate(s.patches, 1):
                ppath = snapshot / s.name / p.file if snapshot is not None else p.path
                res = _git(tree, "am", "--no-3way", "--keep-cr", str(ppath), check=False, env=env)
                if res.returncode != 0:
                    raise HarnessError(_patch_failure(tree, s, i, p, ppath, res.stdout + res.stderr))


def _patch_failure(tree: Path, s: Series, index: int, p: PatchFile, ppath: Path, am_out: str) -> str:
    _git(tree, "am", "--abort", check=False)
    rej = _run(["git", "-C", str(tree), "apply", "--reject", "--verbose", str(ppath)], check=False)
    rej_texts = []
    for r in sorted(tree.rglob("*.rej")):
        rel = r.relative_to(tree)
        rej_texts.append(f"--- {rel}\n{_tail(r.read_text(errors='replace'), 40)}")
    msg = [f"patch series {s.name!r}: patch {index}/{len(s.patches)} {p.file} ({p.path}) does not apply:",
           _tail(am_out.strip(), 15)]
    applied_out = "\n".join(line for line in (rej.stdout + rej.stderr).splitlines()
                            if line.startswith(("error", "Rejected", "Checking", "Applying", "Applied")))
    if applied_out:
        msg += ["git apply --reject:", _tail(applied_out, 20)]
    if rej_texts:
        msg += ["rejected hunks:", *rej_texts]
    return "\n".join(msg)


# ----------------------------------------------------------------------------------------------------------
# config + compile


def parse_fragment_wants(frags: list[Fragment]) -> dict[str, str | None]:
    """CONFIG_X -> wanted value (None for '# CONFIG_X is not set'); later fragments override earlier."""
    wants: dict[str, str | None] = {}
    for f in frags:
        for line in f.data.decode(errors="replace").splitlines():
            line = line.strip()
            m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
            if m:
                wants[m.group(1)] = m.group(2)
                continue
            m = re.match(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$", line)
            if m:
                wants[m.group(1)] = None
    return wants


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def dropped_options(wants: dict[str, str | None], config_text: str) -> list[str]:
    have = parse_config(config_text)
    bad = []
    for opt, want in wants.items():
        got = have.get(opt)
        if want is None:
            if got is not None and got != "n":
                bad.append(f"{opt}: wanted not set, got {got}")
        elif got != want:
            bad.append(f"{opt}: wanted {want}, got {'not set' if got is None else got}")
    return bad


class _Build:
    """One build's log and make runner."""

    def __init__(self, log_path: Path, env: dict, rep: _Reporter, expected_units: int):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.env = env
        self.rep = rep
        self.units = 0
        self.expected = expected_units
        self.task = None

    def close(self):
        self.log.close()

    def run(self, cmd: list[str], cwd: Path, what: str, count: bool = False) -> str:
        self.log.write(f"\n$ (cd {cwd} && {' '.join(cmd)})\n")
        self.log.flush()
        captured = []
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
        except OSError as exc:
            raise HarnessError(f"{what}: cannot run {cmd[0]}: {exc}") from None
        try:
            for line in proc.stdout:
                self.log.write(line)
                captured.append(line)
                if count and UNIT_LINE.match(line):
                    self.units += 1
                    if self.units > self.expected:
                        self.expected = int(self.units * 1.05) + 1
                        self.rep.update(self.task, total=self.expected)
                    self.rep.update(self.task, completed=self.units)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self.log.flush()
        if rc != 0:
            raise _MakeFailed(what, rc, "".join(captured))
        return "".join(captured)


class _MakeFailed(Exception):
    def __init__(self, what, rc, output):
        super().__init__(what)
        self.what, self.rc, self.output = what, rc, output


def error_excerpt(log_text: str, limit: int = 30) -> str:
    """The last `limit` lines around errors in a build log (or the log's tail if nothing looks like one)."""
    lines = log_text.splitlines()
    pat = re.compile(r"error:|Error \d|\*\*\*|fatal:|undefined reference|not clean")
    keep: set[int] = set()
    for i, line in enumerate(lines):
        if pat.search(line):
            keep.update(range(max(0, i - 2), min(len(lines), i + 3)))
    if not keep:
        return _tail(log_text, limit)
    return "\n".join(lines[i] for i in sorted(keep)[-limit:])


def _expected_units() -> int:
    best = None
    for info in list_cached():
        n = info.get("compile_units")
        if isinstance(n, int) and n > 0 and (info.get("cold") or best is None):
            best = n
    return best or DEFAULT_COMPILE_UNITS


def _make(jobs: int, tree_args: list[str], *targets: str) -> list[str]:
    return ["make", f"-j{jobs}", *tree_args, *MAKE_FLAGS, *targets]


def _configure_and_compile(b: _Build, srcdir: Path, tree_args: list[str], cfgdir: Path, frags: list[Fragment],
                           frag_paths: list[Path], timings: dict, label: str) -> str:
    """tinyconfig + merge_config + olddefconfig, check fragments, bzImage, modules. Returns kernelrelease."""
    jobs = os.cpu_count() or 1
    t = time.monotonic()
    with b.rep.status(f"configuring {label}"):
        b.run(_make(jobs, tree_args, "tinyconfig"), srcdir, "make tinyconfig")
        b.run([str(srcdir / "scripts/kconfig/merge_config.sh"), "-m", ".config", *map(str, frag_paths)],
              cfgdir, "merge_config.sh")
        b.run(_make(jobs, tree_args, "olddefconfig"), srcdir, "make olddefconfig")
    bad = dropped_options(parse_fragment_wants(frags), (cfgdir / ".config").read_text())
    if bad:
        raise HarnessError(
            f"kernel config: {len(bad)} option(s) the fragment(s) ask for did not survive olddefconfig "
            f"(missing dependencies?):\n  " + "\n  ".join(bad))
    timings["config_s"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    b.task = b.rep.add(f"compiling {label}", b.expected)
    b.run(_make(jobs, tree_args, "bzImage"), srcdir, "make bzImage", count=True)
    timings["bzimage_s"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    b.run(_make(jobs, tree_args, "modules"), srcdir, "make modules", count=True)
    timings["modules_s"] = round(time.monotonic() - t, 2)
    rel = b.run(["make", "-s", *tree_args, *MAKE_FLAGS, "kernelrelease"], srcdir, "make kernelrelease")
    return rel.strip().splitlines()[-1].strip()


def _build_contig_bench(b: _Build, objdir: Path, work: Path | None, timings: dict) -> dict:
    """Build the snapshot copy `work` of the contig_bench module against objdir; keep only the .ko."""
    if work is None:
        return {}
    t = time.monotonic()
    mdir = work.parent
    with b.rep.status("building contig_bench.ko"):
        b.run(["make", f"-j{os.cpu_count() or 1}", "-C", str(objdir), *MAKE_FLAGS, f"M={work}", "modules"],
              objdir, "building contig_bench.ko", count=True)
    ko = work / "contig_bench.ko"
    if not ko.is_file():
        raise HarnessError(f"building contig_bench: make succeeded but {ko} was not produced")
    shutil.copy2(ko, mdir / "contig_bench.ko")
    shutil.rmtree(work)
    timings["contig_bench_s"] = round(time.monotonic() - t, 2)
    return {CONTIG_BENCH_GUEST_PATH: "modules/contig_bench.ko"}


# ----------------------------------------------------------------------------------------------------------
# public API


def build_kernel(spec: KernelSpec | str, *, fragments: list[Path | str] | None = None,
                 tree: Path | str | None = None, progress=None,
                 patches_root: Path | str | None = None) -> GuestKernel:
    """Build (or fetch from cache) the guest kernel a ``base[+SERIES...]`` spec names.

    fragments: extra config fragments merged after kernel_patches/config/guest.config.
    tree: build this kernel checkout out-of-tree instead of the pinned base (spec must be None or "base").
    progress: a rich Progress owned by the caller to add tasks to (else one on stderr).
    patches_root: where series directories live (default $BALLOON_TESTBED_PATCHES or kernel_patches/).
    """
    if tree is not None:
        return _build_tree(spec, Path(tree), fragments, progress)
    if isinstance(spec, str):
        spec = parse_kernel_spec(spec)
    if spec.kind != "build":
        raise InputError(f"kernel spec {spec.text!r}: only base or base+SERIES... specs are built")
    t_start = time.monotonic()
    base = load_base()
    series = [load_series(n, patches_root) for n in spec.series]
    frags = load_fragments(fragments)
    gcc = gcc_version()
    mod_sha = module_source_sha256()
    key = compute_key(base, series, frags, gcc, mod_sha)
    info = _load_build(key)
    if info is not None:
        return _guest_kernel(spec, info)

    with _flock(key):
        info = _load_build(key)
        if info is not None:
            return _guest_kernel(spec, info)
        with _Reporter(progress) as rep:
            _ensure_ccache()
            timings: dict = {}
            t = time.monotonic()
            _check_package(base, rep)
            src = ensure_base_repo(base, progress=rep.progress)
            timings["base_s"] = round(time.monotonic() - t, 2)
            builds = kernel_cache() / "builds"
            builds.mkdir(exist_ok=True)
            tmp = builds / f".tmp-{key}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            b = None
            try:
                (tmp / "series").mkdir()
                frag_paths, mod_copy = snapshot_inputs(tmp, series, frags, mod_sha)
                t = time.monotonic()
                wtree = prepare_tree(src, key, series, rep, snapshot=tmp / "series")
                timings["tree_s"] = round(time.monotonic() - t, 2)
                b = _Build(tmp / "build.log", _build_env(wtree), rep, _expected_units())
                b.log.write(f"# harness kernel build {spec.text} key {key}\n# tree {wtree}\n")
                release = _configure_and_compile(b, wtree, [], wtree, frags, frag_paths, timings, spec.text)
                mods = _build_contig_bench(b, wtree, mod_copy, timings)
                rep.update(b.task, total=b.units, completed=b.units)
                b.close()
            except _MakeFailed as exc:
                b.close()
                _fail(key, tmp, exc, wtree / ".config")
            except BaseException:
                if b is not None:
                    b.close()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            for name, dst in (("arch/x86/boot/bzImage", "bzImage"), (".config", "config"),
                              ("System.map", "System.map")):
                shutil.copy2(wtree / name, tmp / dst)
            timings["total_s"] = round(time.monotonic() - t_start, 2)
            fsha = fragment_sha256(frags)
            series_rec = [{"name": s.name, "patches": [{"file": p.file, "sha256": p.sha256} for p in s.patches]}
                          for s in series]
            bz_sha = hashlib.sha256((tmp / "bzImage").read_bytes()).hexdigest()
            record = {
                "spec": spec.text,
                "slug": spec.slug,
                "version": release,
                "sha256": bz_sha,
                "cache_key": key,
                "config": str(builds / key / "config"),
                "config_fragment_sha256": fsha,
                "series": series_rec,
                "base": {"package": base.package, "version": base.version},
            }
            info = {
                "format": FORMAT_VERSION,
                "spec": spec.text,
                "key": key,
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "timings": timings,
                "base": {"package": base.package, "version": base.version, "kernel_version": base.kernel_version},
                "gcc": gcc,
                "make_flags": list(MAKE_FLAGS),
                "kernelrelease": release,
                "series": series_rec,
                "fragments": [{"path": str(f.path), "sha256": f.sha256} for f in frags],
                "config_fragment_sha256": fsha,
                "modules": sorted(mods.values()),
                "extra_files": mods,
                "contig_bench_sha256": mod_sha,
                "compile_units": b.units,
                "bzimage_sha256": bz_sha,
                "tree": str(wtree),
                "record": record,
            }
            _publish(key, tmp, info)
            rep.log(f"built {spec.text} ({release}) in {timings['total_s']:.0f} s: {builds / key / 'bzImage'}")
    return _guest_kernel(spec, _load_build(key))


def _publish(key: str, tmp: Path, info: dict):
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    final = tmp.parent / key
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _fail(key: str, tmp: Path, exc: _MakeFailed, config: Path | None):
    fdir = kernel_cache() / "failed" / key
    if fdir.exists():
        shutil.rmtree(fdir)
    fdir.parent.mkdir(exist_ok=True)
    shutil.move(str(tmp), str(fdir))
    log = fdir / "build.log"
    if config is not None and config.is_file():
        shutil.copy2(config, fdir / "config")
    hint = ""
    if "not clean" in exc.output or "mrproper" in exc.output:
        hint = ("\nthe kernel source tree has in-tree build artifacts (.config, include/config, ...); "
                "out-of-tree (O=) builds need a clean tree: run `make mrproper` in it first")
    raise HarnessError(f"{exc.what} failed (exit {exc.rc}); last error lines:\n"
                       f"{error_excerpt(log.read_text(errors='replace'))}{hint}\nfull log: {log}")


# ---- --tree: a developer's own checkout, built out of tree


def tree_state(path: Path) -> dict:
    """What decides a --tree build's sources: HEAD, the diff against HEAD, untracked (non-ignored) files."""
    if _run(["git", "-C", str(path), "rev-parse", "--git-dir"], check=False).returncode != 0:
        raise InputError(f"--tree {path}: not a git checkout (the cache key needs git rev-parse HEAD / git diff)")
    head = _run(["git", "-C", str(path), "rev-parse", "HEAD"], what="git rev-parse HEAD").stdout.strip()
    diff = subprocess.run(["git", "-C", str(path), "diff", "--binary", "HEAD"], capture_output=True).stdout
    untracked = subprocess.run(["git", "-C", str(path), "ls-files", "-z", "--others", "--exclude-standard"],
                               capture_output=True).stdout.split(b"\0")
    h = hashlib.sha256()
    names = sorted(u for u in untracked if u)
    for u in names:
        p = path / u.decode(errors="surrogateescape")
        h.update(u + b"\0")
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return {"path": str(path), "head": head, "diff_sha256": hashlib.sha256(diff).hexdigest(),
            "untracked_sha256": h.hexdigest(), "untracked_files": len(names), "dirty": bool(diff or names)}


def _build_tree(spec, path: Path, fragments, progress) -> GuestKernel:
    if spec is not None:
        text = spec.text if isinstance(spec, KernelSpec) else str(spec)
        if text.strip() != "base":
            raise InputError(f"--tree builds the checkout as it is: the spec must be omitted or 'base', "
                             f"got {text!r} (apply series in your tree instead)")
    path = path.expanduser().resolve()
    if not (path / "Makefile").is_file() or not (path / "scripts/kconfig/merge_config.sh").is_file():
        raise InputError(f"--tree {path}: not a kernel source tree (no Makefile / scripts/kconfig/merge_config.sh)")
    if (path / ".config").exists() or (path / "include/config").exists():
        raise InputError(f"--tree {path}: the tree has in-tree build artifacts (.config / include/config); "
                         f"out-of-tree builds need a clean source tree: run `make mrproper` there first")
    t_start = time.monotonic()
    state = tree_state(path)
    frags = load_fragments(fragments)
    gcc = gcc_version()
    mod_sha = module_source_sha256()
    key = compute_key({"tree": state}, [], frags, gcc, mod_sha)
    kspec = KernelSpec(f"tree:{path}@{state['head']}", "tree", path=path)
    info = _load_build(key)
    if info is not None:
        return _guest_kernel(kspec, info)
    with _flock(key), _Reporter(progress) as rep:
        info = _load_build(key)
        if info is not None:
            return _guest_kernel(kspec, info)
        _ensure_ccache()
        timings: dict = {}
        out = kernel_cache() / "trees" / f"ext-{key}"
        out.mkdir(parents=True, exist_ok=True)
        builds = kernel_cache() / "builds"
        builds.mkdir(exist_ok=True)
        tmp = builds / f".tmp-{key}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        basedir = Path(os.path.commonpath([path, out]))
        b = None
        try:
            frag_paths, mod_copy = snapshot_inputs(tmp, [], frags, mod_sha)
            b = _Build(tmp / "build.log", _build_env(None if basedir == Path("/") else basedir), rep,
                       _expected_units())
            b.log.write(f"# harness kernel build --tree {path} key {key}\n# O={out}\n")
            release = _configure_and_compile(b, path, ["-C", str(path), f"O={out}"], out, frags, frag_paths,
                                             timings, f"tree {path.name}")
            mods = _build_contig_bench(b, out, mod_copy, timings)
            rep.update(b.task, total=b.units, completed=b.units)
            b.close()
        except _MakeFailed as exc:
            b.close()
            _fail(key, tmp, exc, out / ".config")
        except BaseException:
            if b is not None:
                b.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for name, dst in (("arch/x86/boot/bzImage", "bzImage"), (".config", "config"), ("System.map", "System.map")):
            shutil.copy2(out / name, tmp / dst)
        timings["total_s"] = round(time.monotonic() - t_start, 2)
        fsha = fragment_sha256(frags)
        bz_sha = hashlib.sha256((tmp / "bzImage").read_bytes()).hexdigest()
        slug = "tree-" + re.sub(r"[^A-Za-z0-9._-]", "_", path.name) + "-" + state["head"][:12]
        record = {
            "spec": kspec.text,
            "slug": slug,
            "version": release,
            "sha256": bz_sha,
            "cache_key": key,
            "config": str(builds / key / "config"),
            "config_fragment_sha256": fsha,
            "series": [],
            "base": {"package": None, "version": None, "tree": str(path), "head": state["head"],
                     "dirty": state["dirty"]},
        }
        info = {
            "format": FORMAT_VERSION, "spec": kspec.text, "key": key,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings": timings, "base": None, "tree": state, "gcc": gcc, "make_flags": list(MAKE_FLAGS),
            "kernelrelease": release, "series": [],
            "fragments": [{"path": str(f.path), "sha256": f.sha256} for f in frags],
            "config_fragment_sha256": fsha, "modules": sorted(mods.values()), "extra_files": mods,
            "contig_bench_sha256": mod_sha, "compile_units": b.units, "bzimage_sha256": bz_sha,
            "objdir": str(out), "record": record,
        }
        _publish(key, tmp, info)
        rep.log(f"built tree {path} ({release}) in {timings['total_s']:.0f} s: {builds / key / 'bzImage'}")
    return _guest_kernel(kspec, _load_build(key))


# ----------------------------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("kernel", help="build and list guest kernels")
    ksub = p.add_subparsers(dest="kernel_command", required=True)
    b = ksub.add_parser("build", help="build base[+SERIES...] (cached); prints the bzImage path last")
    b.add_argument("spec", nargs="?", help="base or base+SERIES[+SERIES...] (optional with --tree)")
    b.add_argument("--config-fragment", action="append", default=[], metavar="F",
                   help="extra config fragment merged after kernel_patches/config/guest.config (repeatable)")
    b.add_argument("--tree", metavar="PATH", help="build this kernel checkout out-of-tree instead of the base")
    b.set_defaults(func=_cmd_build)
    ls = ksub.add_parser("list", help="show cached kernel builds")
    ls.set_defaults(func=_cmd_list)


def _cmd_build(args: argparse.Namespace) -> int:
    if args.spec is None and args.tree is None:
        raise InputError("kernel build: give a SPEC (base or base+SERIES...) or --tree PATH")
    spec = None
    if args.spec is not None:
        spec = parse_kernel_spec(args.spec)
        if spec.kind != "build":
            raise InputError(f"kernel build: spec {args.spec!r} is not base or base+SERIES...")
    gk = build_kernel(spec, fragments=args.config_fragment, tree=args.tree)
    sys.stdout.flush()
    print(gk.bzimage)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cached guest kernels")
    for col in ("spec", "version", "size", "key", "built"):
        table.add_column(col)
    for info in list_cached():
        table.add_row(info.get("spec", "?"), info.get("kernelrelease") or "?",
                      f"{info['bzimage_size'] / 2**20:.1f} MiB", info["key"][:12],
                      (info.get("built_at") or "?").replace("T", " ")[:16])
    Console().print(table)
    return 0
