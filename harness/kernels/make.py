"""Running one kernel build: configure and compile a checkout with make (ccache), build the test modules, and
stage what a cache entry publishes (bzImage, config, System.map, modules, build.json, used-files.json).

Used by :mod:`harness.kernels.build` (base + series, built in their worktrees) and
:mod:`harness.kernels.tree_build` (a developer's checkout, built in its cached clone).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from harness.errors import HarnessError
from harness.kernels import used
from harness.kernels.cache import INCOMPLETE_MARKER, kernel_cache, list_cached, published_digests
from harness.kernels.config import check_config
from harness.kernels.inputs import BUILD_ENV, FORMAT_VERSION, MAKE_FLAGS, Fragment, fragment_sha256
from harness.kernels.progress import Reporter
from harness.kernels.record import KernelRecord
from harness.kernels.tree import apt_install
from harness.paths import cache_root
from harness.process import run_command

GUEST_MODULE_DIR = "/lib/modules"  # where the guest finds the test modules: /lib/modules/NAME.ko
CONTIG_BENCH_GUEST_PATH = f"{GUEST_MODULE_DIR}/contig_bench.ko"

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


def ensure_ccache():
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


def _build_modules(b: _Build, objdir: Path, work: Path | None, timings: dict) -> dict:
    """Build the snapshot copy `work` of the test modules against objdir; keep only the .ko files."""
    if work is None:
        return {}
    t = time.monotonic()
    mdir = work.parent
    with b.rep.status("building the test modules"):
        b.run(["make", f"-j{os.cpu_count() or 1}", "-C", str(objdir), *MAKE_FLAGS, f"M={work}", "modules"],
              objdir, "building the test modules", count=True)
    wanted = re.findall(r"(\w+)\.o", (work / "Makefile").read_text())
    missing = [name for name in wanted if not (work / f"{name}.ko").is_file()]
    if missing:
        raise HarnessError(f"building the test modules: make succeeded but {', '.join(missing)} .ko not produced")
    for name in wanted:
        shutil.copy2(work / f"{name}.ko", mdir / f"{name}.ko")
    timings["modules_out_of_tree_s"] = round(time.monotonic() - t, 2)
    return {f"{GUEST_MODULE_DIR}/{name}.ko": f"modules/{name}.ko" for name in wanted}


@dataclass(frozen=True)
class Checkout:
    """What to build: make runs in srcdir with make_args and writes objdir (srcdir itself when in-tree)."""

    srcdir: Path
    make_args: list[str]
    objdir: Path
    ccache_basedir: Path | None
    label: str  # names the build in status lines
    log_header: str  # first lines of build.log


@dataclass(frozen=True)
class Built:
    """What run_build produced, as build.json and the manifest record it."""

    release: str  # make kernelrelease
    modules: dict[str, str]  # guest path -> file under the build directory
    compile_units: int
    fragment_sha256: str
    bzimage_sha256: str
    files: dict[str, str]  # sha256 of every published file, checked on each cache hit
    ccache: dict  # {"hits": N, "misses": M} of this build's compilations


def build_info(key: str, spec_text: str, slug: str, built: Built, series: list[dict], frags: list[Fragment],
                gcc: str, mod_sha: str | None, timings: dict, *, record_base: dict, info_base: dict | None,
                extra: dict) -> dict:
    """build.json for a finished build, with the manifest record it gives every bundle that boots it."""
    record = KernelRecord(spec=spec_text, slug=slug, version=built.release, sha256=built.bzimage_sha256, cache_key=key,
                          config=str(kernel_cache() / "builds" / key / "config"),
                          config_fragment_sha256=built.fragment_sha256, series=series, base=record_base)
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
        "modules_sha256": mod_sha,
        "compile_units": built.compile_units,
        "bzimage_sha256": built.bzimage_sha256,
        "file_sha256": built.files,
        "ccache": built.ccache,
        **extra,
        "record": record.model_dump(mode="json"),
    }


def staging_dir(key: str) -> Path:
    """A new, empty builds/.tmp-<key>."""
    builds = kernel_cache() / "builds"
    builds.mkdir(exist_ok=True)
    tmp = builds / f".tmp-{key}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def removed_on_error(tmp: Path):
    """Remove the staging directory tmp if the block raises."""
    try:
        yield
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_build(key: str, tmp: Path, rep: Reporter, co: Checkout, frags: list[Fragment], frag_paths: list[Path],
               mod_copy: Path | None, timings: dict, t_start: float, locks: tuple[IO, ...] = ()) -> Built:
    """Configure and compile the checkout, build the test modules, copy bzImage, config and System.map into tmp.

    A make failure moves tmp to failed/<key> and raises HarnessError with the log's error lines; any other
    error removes tmp.  Records the step times and the total since t_start in timings.  make inherits the
    locks held: if the harness is killed, the next build of the key waits until every compiler has exited.
    """
    marker = co.objdir / INCOMPLETE_MARKER
    stats_log = tmp / "ccache-stats.log"
    with removed_on_error(tmp):
        b = _Build(tmp / "build.log", _build_env(co.ccache_basedir, stats_log), rep, _expected_units(),
                   tuple(lock.fileno() for lock in locks))
    try:
        b.log.write(co.log_header)
        _clean_if_interrupted(b, co, marker)
        marker.write_text(f"a build of {key} began here at {datetime.now(UTC).isoformat(timespec='seconds')} "
                          f"(pid {os.getpid()}); it has not finished\n")
        release = _configure_and_compile(b, co.srcdir, co.make_args, co.objdir, frags, frag_paths, timings,
                                         co.label)
        mods = _build_modules(b, co.objdir, mod_copy, timings)
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
    return Built(release, mods, b.units, fragment_sha256(frags), files["bzImage"], files, _ccache_stats(stats_log))


def _clean_if_interrupted(b: _Build, co: Checkout, marker: Path) -> None:
    """An object tree whose last build never finished (killed, interrupted) may hold half-written objects
    that make would take as up to date: remove every generated file (ccache makes the rebuild cheap)."""
    if not marker.exists():
        return
    b.rep.log(f"kernel build: the last build in {co.objdir} did not finish ({marker.read_text().strip()}): "
              f"make mrproper there before building (ccache keeps the rebuild short)")
    with b.rep.status("cleaning an interrupted build (make mrproper)"):
        b.run(["make", *co.make_args, "mrproper"], co.srcdir, "make mrproper")


def _ccache_stats(stats_log: Path) -> dict:
    """Hits and misses of the compilations one build asked ccache for (its CCACHE_STATSLOG), leaving out the
    compiler probes (cc-option tests on /dev/null or stdin), and the first sources that missed."""
    try:
        text = stats_log.read_text(errors="replace")
    except FileNotFoundError:
        return {"hits": 0, "misses": 0, "missed": []}
    stats_log.unlink()
    entries: list[tuple[str, set[str]]] = []
    for line in text.splitlines():
        if line.startswith("# "):
            entries.append((line[2:].strip(), set()))
        elif entries:
            entries[-1][1].add(line.strip())
    hits, missed = 0, []
    for name, counters in entries:
        if name in ("/dev/null", "-", ""):
            continue
        if counters & {"direct_cache_hit", "preprocessed_cache_hit"}:
            hits += 1
        elif "cache_miss" in counters:
            missed.append(name)
    return {"hits": hits, "misses": len(missed), "missed": missed[:40]}


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
