"""Build guest kernels, cached: the pinned base with patch series applied, or a developer's own checkout
(``--tree``), configured from the config fragments and compiled with make under a rich progress bar.

What goes into a build and its key: :mod:`harness.kernels.inputs`; the source trees: :mod:`harness.kernels.tree`;
the config checks: :mod:`harness.kernels.config`; where builds are cached: :mod:`harness.kernels.cache`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessError, InputError
from harness.kernels import reuse, used
from harness.kernels.cache import (
    INCOMPLETE_MARKER,
    check_build,
    flock,
    guest_kernel,
    kernel_cache,
    list_cached,
    load_build,
    publish,
    published_digests,
)
from harness.kernels.config import check_config
from harness.kernels.flavours import Flavour, load_flavours
from harness.kernels.inputs import (
    BUILD_ENV,
    FORMAT_VERSION,
    MAKE_FLAGS,
    Fragment,
    compute_key,
    fragment_sha256,
    gcc_version,
    load_base,
    load_fragments,
    load_stack,
    module_source_sha256,
    snapshot_inputs,
)
from harness.kernels.progress import Reporter
from harness.kernels.spec import GuestKernel, KernelSpec, parse_kernel_spec
from harness.kernels.tree import (
    apt_install,
    check_package,
    ensure_base_repo,
    prepare_tree,
)
from harness.paths import cache_root
from harness.process import run_command

CONTIG_BENCH_GUEST_PATH = "/lib/modules/contig_bench.ko"

# Compile units counted for the progress bar: kbuild's quiet-mode lines ("  CC      mm/page_alloc.o").
UNIT_LINE = re.compile(r"^\s+(CC|CC \[M\]|AS|LD|LD \[M\]|AR|HOSTCC|HOSTLD|CPP|LDS|OBJCOPY|MODPOST|GEN|"
                       r"UPD|SYSHDR|SYSTBL|VDSO|VDSO2C|RELOCS|ZOFFSET|VOFFSET|MKPIGGY|BUILD|POLICY|"
                       r"MKCAP|WRAP|KSYMS|SORTTAB|NM|CHKSHA1|DESCEND|INSTALL|CALL|GZIP)\s")
# Expected number of such lines for a cold build of this config when no earlier build.json knows better
# (measured 1959 for base with guest.config as of 2026-11-22; see build.json "compile_units").
DEFAULT_COMPILE_UNITS = 1960


# ----------------------------------------------------------------------------------------------------------
# running make


def _build_env(basedir: Path | None, stats_log: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update(BUILD_ENV)
    env["CCACHE_DIR"] = str(cache_root() / "ccache")
    # Builds run in a directory per key (or per developer tree): the few objects compiled with -g (the
    # real-mode trampoline, stripped to a flat binary) would otherwise hash the directory and never hit.
    env["CCACHE_NOHASHDIR"] = "1"
    if stats_log is not None:
        env["CCACHE_STATSLOG"] = str(stats_log)
    if basedir is not None:
        env["CCACHE_BASEDIR"] = str(basedir)
    else:
        env.pop("CCACHE_BASEDIR", None)
    env["LC_ALL"] = "C"
    return env


def _ensure_ccache():
    if shutil.which("ccache") is None:
        apt_install("ccache")
        if shutil.which("ccache") is None:
            raise HarnessError("ccache is still missing after apt-get install ccache")


class _Build:
    """One build's log and make runner."""

    def __init__(self, log_path: Path, env: dict, rep: Reporter, expected_units: int, pass_fds: tuple[int, ...] = ()):
        self.log_path = log_path
        self.pass_fds = pass_fds
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

        def on_line(line: str) -> None:
            self.log.write(line)
            if count and UNIT_LINE.match(line):
                self.units += 1
                if self.units > self.expected:
                    self.expected = int(self.units * 1.05) + 1
                    self.rep.update(self.task, total=self.expected)
                self.rep.update(self.task, completed=self.units)

        res = run_command(cmd, cwd=cwd, env=self.env, on_line=on_line, what=what, check=False,
                          pass_fds=self.pass_fds)
        self.log.flush()
        if res.returncode != 0:
            raise _MakeFailed(what, res.returncode, res.stdout)
        return res.stdout


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
        return "\n".join(lines[-limit:])
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
    check_config(frags, (cfgdir / ".config").read_text())
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
    timings["contig_bench_s"] = round(time.monotonic() - t, 2)
    return {CONTIG_BENCH_GUEST_PATH: "modules/contig_bench.ko"}


# ----------------------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class _Inputs:
    """What decides a ``base[+SERIES...][%FLAVOUR...]`` build, and its cache key."""

    base: Any
    series: list
    flavours: list[Flavour]
    frags: list
    gcc: str
    mod_sha: str | None
    key: str


def _inputs(spec: KernelSpec, fragments: list[Path | str] | None, patches_root: Path | str | None) -> _Inputs:
    base = load_base()
    series = load_stack(spec.series, patches_root)
    flavours = load_flavours(spec.flavours)
    frags = load_fragments([*(fragments or []), *(f.fragment for f in flavours)])
    gcc = gcc_version()
    mod_sha = module_source_sha256()
    return _Inputs(base, series, flavours, frags, gcc, mod_sha, compute_key(base, series, frags, gcc, mod_sha))


def build_key(spec: KernelSpec, patches_root: Path | str | None = None) -> str:
    """The build cache key of a ``base[+SERIES...][%FLAVOUR...]`` spec, without building it."""
    if spec.kind != "build":
        raise InputError(f"kernel spec {spec.text!r}: only base or base+SERIES... specs have a build key")
    return _inputs(spec, None, patches_root).key


def is_built(spec: KernelSpec) -> bool:
    """Whether the build cache already holds the kernel a ``base[+SERIES...]`` spec names."""
    return load_build(build_key(spec)) is not None


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
        from harness.kernels.tree_build import build_tree  # it builds with this module's make machinery

        return build_tree(spec, Path(tree), fragments, progress)
    if isinstance(spec, str):
        spec = parse_kernel_spec(spec)
    if spec.kind != "build":
        raise InputError(f"kernel spec {spec.text!r}: only base or base+SERIES... specs are built")
    t_start = time.monotonic()
    inputs = _inputs(spec, fragments, patches_root)
    base, series, flavours, frags, gcc, mod_sha, key = (inputs.base, inputs.series, inputs.flavours, inputs.frags,
                                                         inputs.gcc, inputs.mod_sha, inputs.key)
    info, damaged = check_build(key)
    if info is not None:
        return flavoured(guest_kernel(spec, info), flavours)
    with Reporter(progress) as rep:
        if damaged:
            rep.log(f"kernel build: the cached build of {spec.text} (key {key[:12]}) is damaged: {damaged}; "
                    f"building it again")
        def waiting() -> None:
            rep.log(f"kernel build: another process is building {spec.text} (key {key[:12]}): waiting for it")

        with flock(key, waiting=waiting) as lock:
            info = load_build(key)
            if info is not None:
                rep.log(f"kernel build: {spec.text} was built meanwhile by another process: using its build")
                return flavoured(guest_kernel(spec, info), flavours)
            below = reuse.find_below(base, series, frags, gcc, mod_sha)
            if below is not None:
                reuse.publish_reuse(key, spec.text, spec.slug, below, series, frags, _staging_dir(key), t_start)
                rep.log(f"kernel build: {spec.text}: not built, {reuse.describe(below)}")
                return flavoured(guest_kernel(spec, load_build(key)), flavours)
            _ensure_ccache()
            timings: dict = {}
            t = time.monotonic()
            check_package(base, rep)
            src = ensure_base_repo(base, progress=rep.progress)
            timings["base_s"] = round(time.monotonic() - t, 2)
            tmp = _staging_dir(key)
            with _removed_on_error(tmp):
                (tmp / "series").mkdir()
                frag_paths, mod_copy = snapshot_inputs(tmp, series, frags, mod_sha)
                t = time.monotonic()
                wtree = prepare_tree(src, key, series, rep, snapshot=tmp / "series")
                timings["tree_s"] = round(time.monotonic() - t, 2)
            checkout = _Checkout(srcdir=wtree, make_args=[], objdir=wtree, ccache_basedir=wtree, label=spec.text,
                                 log_header=f"# harness kernel build {spec.text} key {key}\n# tree {wtree}\n")
            built = _run_build(key, tmp, rep, checkout, frags, frag_paths, mod_copy, timings, t_start, (lock,))
            bdir = kernel_cache() / "builds" / key
            series_rec = [{"name": s.name, "patches": [{"file": p.file, "sha256": p.sha256} for p in s.patches],
                           "of": s.total} for s in series]
            info = _build_info(key, spec.text, spec.slug, built, series_rec, frags, gcc, mod_sha, timings,
                               record_base={"package": base.package, "version": base.version},
                               info_base={"package": base.package, "version": base.version,
                                          "kernel_version": base.kernel_version},
                               extra={"tree": str(wtree)})
            publish(key, tmp, info)
            rep.log(f"built {spec.text} ({built.release}) in {timings['total_s']:.0f} s "
                    f"(ccache: {built.ccache['hits']} hits, {built.ccache['misses']} misses): {bdir / 'bzImage'}")
    return flavoured(guest_kernel(spec, load_build(key)), flavours)


def flavoured(kernel: GuestKernel, flavours: list[Flavour]) -> GuestKernel:
    """The kernel with its flavours' boot parameters and their provenance in its record."""
    if not flavours:
        return kernel
    record = dict(kernel.record, flavours=[
        {"name": f.name, "fragment_sha256": hashlib.sha256(f.fragment.read_bytes()).hexdigest(),
         "boot": f.boot_params or None} for f in flavours])
    return replace(kernel, record=record, cmdline=" ".join(f.boot_params for f in flavours if f.boot_params))


@dataclass(frozen=True)
class _Checkout:
    """What to build: make runs in srcdir with make_args and writes objdir (srcdir itself when in-tree)."""

    srcdir: Path
    make_args: list[str]
    objdir: Path
    ccache_basedir: Path | None
    label: str  # names the build in status lines
    log_header: str  # first lines of build.log


@dataclass(frozen=True)
class _Built:
    """What _run_build produced, as build.json and the manifest record it."""

    release: str  # make kernelrelease
    modules: dict[str, str]  # guest path -> file under the build directory
    compile_units: int
    fragment_sha256: str
    bzimage_sha256: str
    files: dict[str, str]  # sha256 of every published file, checked on each cache hit
    ccache: dict  # {"hits": N, "misses": M} of this build's compilations


def _build_info(key: str, spec_text: str, slug: str, built: _Built, series: list[dict], frags: list[Fragment],
                gcc: str, mod_sha: str | None, timings: dict, *, record_base: dict, info_base: dict | None,
                extra: dict) -> dict:
    """build.json for a finished build, with the manifest record it gives every bundle that boots it."""
    record = {
        "spec": spec_text,
        "slug": slug,
        "version": built.release,
        "sha256": built.bzimage_sha256,
        "cache_key": key,
        "config": str(kernel_cache() / "builds" / key / "config"),
        "config_fragment_sha256": built.fragment_sha256,
        "series": series,
        "base": record_base,
    }
    return {
        "format": FORMAT_VERSION,
        "spec": spec_text,
        "key": key,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings": timings,
        "base": info_base,
        "gcc": gcc,
        "make_flags": list(MAKE_FLAGS),
        "kernelrelease": built.release,
        "series": series,
        "fragments": [{"path": str(f.path), "sha256": f.sha256} for f in frags],
        "config_fragment_sha256": built.fragment_sha256,
        "modules": sorted(built.modules.values()),
        "extra_files": built.modules,
        "contig_bench_sha256": mod_sha,
        "compile_units": built.compile_units,
        "bzimage_sha256": built.bzimage_sha256,
        "file_sha256": built.files,
        "ccache": built.ccache,
        **extra,
        "record": record,
    }


def _staging_dir(key: str) -> Path:
    """A new, empty builds/.tmp-<key>."""
    builds = kernel_cache() / "builds"
    builds.mkdir(exist_ok=True)
    tmp = builds / f".tmp-{key}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def _removed_on_error(tmp: Path):
    """Remove the staging directory tmp if the block raises."""
    try:
        yield
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_build(key: str, tmp: Path, rep: Reporter, co: _Checkout, frags: list[Fragment], frag_paths: list[Path],
               mod_copy: Path | None, timings: dict, t_start: float, locks: tuple[IO, ...] = ()) -> _Built:
    """Configure and compile the checkout, build contig_bench, copy bzImage, config and System.map into tmp.

    A make failure moves tmp to failed/<key> and raises HarnessError with the log's error lines; any other
    error removes tmp.  Records the step times and the total since t_start in timings.  make inherits the
    locks held: if the harness is killed, the next build of the key waits until every compiler has exited.
    """
    b = None
    marker = co.objdir / INCOMPLETE_MARKER
    stats_log = tmp / "ccache-stats.log"
    try:
        b = _Build(tmp / "build.log", _build_env(co.ccache_basedir, stats_log), rep, _expected_units(),
                   tuple(lock.fileno() for lock in locks))
        b.log.write(co.log_header)
        _clean_if_interrupted(b, co, marker)
        marker.write_text(f"a build of {key} began here at {datetime.now(UTC).isoformat(timespec='seconds')} "
                          f"(pid {os.getpid()}); it has not finished\n")
        release = _configure_and_compile(b, co.srcdir, co.make_args, co.objdir, frags, frag_paths, timings,
                                         co.label)
        mods = _build_contig_bench(b, co.objdir, mod_copy, timings)
        t = time.monotonic()
        used_files = used.collect(co.objdir, co.srcdir, [mod_copy] if mod_copy is not None else [])
        timings["used_files_s"] = round(time.monotonic() - t, 2)
        rep.update(b.task, total=b.units, completed=b.units)
        b.close()
    except _MakeFailed as exc:
        b.close()
        if exc.rc > 0:  # make itself failed (not killed): kbuild deleted what it had half written
            marker.unlink(missing_ok=True)
        _fail(key, tmp, exc, co.objdir / ".config")
    except BaseException:
        if b is not None:
            b.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if mod_copy is not None:
        shutil.rmtree(mod_copy)
    for name, dst in (("arch/x86/boot/bzImage", "bzImage"), (".config", "config"), ("System.map", "System.map")):
        shutil.copy2(co.objdir / name, tmp / dst)
    marker.unlink()
    used.save(tmp, used_files)
    timings["total_s"] = round(time.monotonic() - t_start, 2)
    files = published_digests(tmp, ["bzImage", "config", "System.map", *mods.values()])
    return _Built(release, mods, b.units, fragment_sha256(frags), files["bzImage"], files, _ccache_stats(stats_log))


def _clean_if_interrupted(b: _Build, co: _Checkout, marker: Path) -> None:
    """An object tree whose last build never finished (killed, interrupted) may hold half-written objects
    that make would take as up to date: remove every generated file (ccache makes the rebuild cheap)."""
    if not marker.exists():
        return
    b.rep.log(f"kernel build: the last build in {co.objdir} did not finish ({marker.read_text().strip()}): "
              f"make mrproper there before building (ccache keeps the rebuild short)")
    with b.rep.status("cleaning an interrupted build (make mrproper)"):
        b.run(["make", *co.make_args, "mrproper"], co.srcdir, "make mrproper")


def _ccache_stats(stats_log: Path) -> dict:
    """Hits and misses of the compilations one build asked ccache for (its CCACHE_STATSLOG)."""
    hits = misses = 0
    try:
        text = stats_log.read_text(errors="replace")
    except FileNotFoundError:
        return {"hits": 0, "misses": 0}
    stats_log.unlink()
    for entry in text.split("\n# ")[0:]:
        if "direct_cache_hit" in entry or "preprocessed_cache_hit" in entry:
            hits += 1
        elif "cache_miss" in entry:
            misses += 1
    return {"hits": hits, "misses": misses}


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
