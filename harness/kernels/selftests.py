"""The kernel's mm selftests (tools/testing/selftests/mm), built statically from the same source tree as the
kernel under test and cached beside its build: ``builds/<key>/selftests-mm/``.

The guest has no libc, so every test is linked with ``LDFLAGS=-static``.  make runs with ``-k``: a test
whose build fails (most often a missing libcap/libnuma development package) is recorded with the reason,
and every other test is still built.  Building the selftests never rebuilds the kernel: the key's source tree
is recreated from the base and its series if it was deleted, and ``make headers`` needs no kernel build.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.kernels.cache import flock, kernel_cache, load_build
from harness.kernels.inputs import load_base, load_stack
from harness.kernels.progress import Reporter
from harness.kernels.spec import GuestKernel, KernelSpec
from harness.kernels.tree import ensure_base_repo, prepare_tree, sync_user_tree, tree_state, user_checkout
from harness.process import run_command

SELFTESTS_FORMAT = "1"
SELFTESTS_DIR = "selftests-mm"
MM_DIR = "tools/testing/selftests/mm"
# Build errors that name a missing development package: header -> the Debian package that provides it.
MISSING_HEADERS = {"sys/capability.h": "libcap-dev", "numa.h": "libnuma-dev", "numaif.h": "libnuma-dev",
                   "liburing.h": "liburing-dev", "fuse.h": "libfuse-dev"}


@dataclass(frozen=True)
class SelftestBuild:
    """Built mm selftests: name -> static binary, and name -> why a test of the tree was not built."""

    directory: Path
    binaries: dict[str, Path]
    not_built: dict[str, str]
    source: str  # the tree they were built from

    def binary(self, name: str) -> Path:
        if name in self.binaries:
            return self.binaries[name]
        raise InputError(f"mm selftest {name!r}: {self.not_built.get(name) or 'no such test in ' + MM_DIR}")


def check_selftest_source(spec: KernelSpec) -> None:
    """InputError, before anything boots, when the spec names a kernel without a source tree here."""
    if spec.kind == "build":
        return
    if spec.kind == "file" and spec.path is not None and spec.path.parent.parent == kernel_cache() / "builds" \
            and load_build(spec.path.parent.name) is not None:
        return
    raise InputError(f"kernel {spec.text!r}: kselftest steps run the selftests of the kernel's own source tree, "
                     f"so the kernel must be base[+SERIES] or a bzImage built by `harness kernel build` "
                     f"(--tree included); {spec.text} has no tree here")


def _build_info(kernel: GuestKernel) -> dict:
    """build.json of the kernel's cached build (a base[+SERIES] spec, or the bzImage of a published build)."""
    key = kernel.record.cache_key
    if key is None and kernel.bzimage.parent.parent == kernel_cache() / "builds":
        key = kernel.bzimage.parent.name
    info = load_build(key) if key else None
    if info is None:
        raise InputError(f"kernel {kernel.spec.text!r}: the mm selftests are built from the kernel's source tree, "
                         f"so the kernel must be a base[+SERIES] spec or a bzImage built by `harness kernel build` "
                         f"(stock and other images have no tree here)")
    return info


@contextlib.contextmanager
def _source_tree(kernel: GuestKernel, info: dict, rep: Reporter) -> Iterator[Path]:
    """The kernel's source tree, to run `make headers` and build the selftests in (held while in use)."""
    tree = info.get("tree")
    if isinstance(tree, dict):  # a developer's --tree: the checkout must still be what the kernel was built from
        path = Path(tree["path"])
        now = tree_state(path) if path.is_dir() else None
        if now is None or any(now.get(k) != tree.get(k) for k in ("head", "diff_sha256", "untracked_sha256")):
            raise InputError(f"kernel {kernel.spec.text!r}: its tree {path} has changed since the kernel was built; "
                             f"rebuild it (harness kernel build --tree {path}) so the selftests match the kernel")
        with flock(user_checkout(path)[1]):
            yield sync_user_tree(path, tree, rep)
        return
    series = load_stack([f"{s['name']}@{len(s['patches'])}" for s in info.get("series", [])])
    src = ensure_base_repo(load_base(), progress=rep.progress)
    yield prepare_tree(src, info["key"], series, rep, config=info.get("config_fragment_sha256"))


def load_selftests(key: str) -> SelftestBuild | None:
    d = kernel_cache() / "builds" / key / SELFTESTS_DIR
    try:
        meta = json.loads((d / "selftests.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if meta.get("format") != SELFTESTS_FORMAT:
        return None
    return SelftestBuild(d, {n: d / "bin" / n for n in meta["built"]}, meta["not_built"], meta["source"])


def build_mm_selftests(kernel: GuestKernel, progress=None) -> SelftestBuild:
    """The kernel's mm selftests, built once per kernel build key (about 30 s on 2 cores)."""
    info = _build_info(kernel)
    key = info["key"]
    cached = load_selftests(key)
    if cached is not None:
        return cached
    with flock(f"{key}-selftests"):
        cached = load_selftests(key)
        if cached is not None:
            return cached
        with Reporter(progress) as rep, _source_tree(kernel, info, rep) as src:
            make_args, hdr_root = ["-C", str(src)], src
            final = kernel_cache() / "builds" / key / SELFTESTS_DIR
            work = final.with_name(f".tmp-{SELFTESTS_DIR}")
            shutil.rmtree(work, ignore_errors=True)
            (work / "out").mkdir(parents=True)
            t0 = time.monotonic()
            jobs = str(os.cpu_count() or 1)
            with rep.status(f"building the mm selftests of {kernel.spec.text}"):
                log = run_command(["make", *make_args, "-j", jobs, "headers"], what="make headers").stdout
                res = run_command(["make", "-k", "-j", jobs, "-C", str(src / MM_DIR), "LDFLAGS=-static",
                                   f"OUTPUT={work / 'out'}", f"KHDR_INCLUDES=-isystem {hdr_root / 'usr/include'}"],
                                  check=False)
            log += res.stdout + res.stderr
            (work / "build.log").write_text(log)
            built, not_built = _collect(work, src, log)
            if not built:
                raise HarnessError(f"no mm selftest of {kernel.spec.text} built; see {work / 'build.log'}")
            meta = {"format": SELFTESTS_FORMAT, "source": str(src), "built": sorted(built),
                    "not_built": not_built, "seconds": round(time.monotonic() - t0, 1)}
            (work / "selftests.json").write_text(json.dumps(meta, indent=1) + "\n")
            shutil.rmtree(work / "out")
            shutil.rmtree(final, ignore_errors=True)
            os.rename(work, final)
            rep.log(f"built {len(built)} mm selftests of {kernel.spec.text} in {meta['seconds']:.0f} s "
                    f"({len(not_built)} not built)")
    result = load_selftests(key)
    assert result is not None
    return result


def _is_static_elf(path: Path) -> bool:
    with path.open("rb") as f:
        if f.read(4) != b"\x7fELF":
            return False
    return "statically linked" in run_command(["file", "-b", path]).stdout


def _collect(work: Path, src: Path, log: str) -> tuple[list[str], dict[str, str]]:
    """Move the static test binaries to work/bin; the reason for each test the Makefile wanted but did not build."""
    out = work / "out"
    (work / "bin").mkdir()
    built = []
    for p in sorted(out.iterdir()):
        if p.is_file() and os.access(p, os.X_OK) and _is_static_elf(p):
            shutil.move(p, work / "bin" / p.name)
            built.append(p.name)
    wanted = _makefile_targets(src / MM_DIR)
    not_built = {}
    for name in sorted(wanted - set(built)):
        not_built[name] = _why_not_built(name, log)
    return built, not_built


def _makefile_targets(mm: Path) -> set[str]:
    text = (mm / "Makefile").read_text(errors="replace")
    names = set(re.findall(r"^TEST_GEN_FILES\s*\+?=\s*(\S+)", text, re.MULTILINE))
    names |= {n for n in re.findall(r"^TEST_GEN_PROGS\s*\+?=\s*(\S+)", text, re.MULTILINE)}
    return {n for n in names if "$" not in n}


def _why_not_built(name: str, log: str) -> str:
    for line in log.splitlines():
        if f"{name}.c" not in line and f"/{name}:" not in line and f"/{name} " not in line:
            continue
        for header, package in MISSING_HEADERS.items():
            if header in line:
                return f"not built: needs {package} ({header})"
    for line in log.splitlines():
        if f"{name}.c" in line and "error" in line:
            return f"not built: {line.strip()[:200]}"
    return "not built (see selftests-mm/build.log)"
