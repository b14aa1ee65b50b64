"""The kernel build cache on disk: where things live, its locks, and published builds.

Layout under ``cache_root()/kernel/``::

    src/linux-<version>/     the base tarball extracted once and committed as a git repo (tag ``base``);
                             pristine, never built in
    trees/<key>/             a git worktree per build key; the key's series are applied there with ``git am``
    trees/<key>.ready        written once every patch applied (a worktree without it is half-made: recreated)
    trees/user-<name>-<hash>/  a ``git clone --shared`` of a developer's checkout (``--tree``), synced to its
                             state and built in-tree (see :mod:`harness.kernels.tree_build`)
    builds/<key>/            published outputs: bzImage, config, System.map, series/, modules/, build.json, build.log,
                             used-files.json (what the build read: see :mod:`harness.kernels.used`)
    builds/.tmp-<key>/       a build in progress (renamed to builds/<key> when complete, so never a cache hit)
    failed/<key>/            build.log (and config) of the last failed build of a key
    locks/                   flock files: one per key, one for the base repo

The build key is the sha256 of every input that decides the output (see :func:`harness.kernels.inputs.compute_key`);
a cache hit hashes the inputs, reads ``builds/<key>/build.json`` and checks the sha256 it records of every
published file (bzImage, modules), so an image truncated or altered after its build is never served: it is
rebuilt, and the build says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from harness.kernels.record import KernelRecord
from harness.kernels.spec import GuestKernel, KernelSpec
from harness.paths import cache_root

# Written into an object tree while a build runs there; found at the start of a build, it means the last one
# there was killed half-way, and its objects cannot be trusted.
INCOMPLETE_MARKER = ".harness-build-incomplete"


def kernel_cache() -> Path:
    """cache_root()/kernel, created if missing."""
    d = cache_root() / "kernel"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _lock_file(name: str) -> IO:
    d = kernel_cache() / "locks"
    d.mkdir(exist_ok=True)
    return open(d / f"{name}.lock", "w")


def _try_lock(fh: IO) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def flock(name: str, waiting: Callable[[], None] | None = None) -> Iterator[IO]:
    """Hold locks/<name>.lock exclusively (one per build key, "src" for the base repo); yields the open lock file.

    waiting() is called once when another process holds the lock, before blocking until it is free.  The lock
    is never released with LOCK_UN, only by closing: a build hands the file to make (pass_fds), so if the
    harness is killed, the lock stays held until the last compiler it started has exited.
    """
    with _lock_file(name) as fh:
        if not _try_lock(fh):
            if waiting is not None:
                waiting()
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield fh


@contextlib.contextmanager
def flock_if_free(name: str) -> Iterator[IO | None]:
    """Hold locks/<name>.lock if nobody else holds it; else yield None at once."""
    with _lock_file(name) as fh:
        yield fh if _try_lock(fh) else None


def load_build(key: str) -> dict | None:
    """builds/<key>/build.json if that build is complete and intact, else None (see :func:`check_build`)."""
    return check_build(key)[0]


def check_build(key: str) -> tuple[dict | None, str | None]:
    """(build.json, None) for a complete, intact build; (None, None) when there is none (or only half a one);
    (None, PROBLEM) when one was published but a file it records is missing or is not what was built."""
    bdir = kernel_cache() / "builds" / key
    try:
        info = json.loads((bdir / "build.json").read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"its build.json cannot be read ({exc})"
    if not isinstance(info, dict) or info.get("key") != key:
        return None, "its build.json names another build"
    expected = dict(info.get("file_sha256") or {})
    if "bzImage" not in expected:  # builds published before file_sha256 existed record the image alone
        if not info.get("bzimage_sha256"):
            return None, "its build.json records no sha256 of the bzImage"
        expected["bzImage"] = info["bzimage_sha256"]
        expected.update({rel: "" for rel in info.get("extra_files", {}).values()})
    for rel, want in sorted(expected.items()):
        try:
            got = file_sha256(bdir / rel)
        except FileNotFoundError:
            return None, f"{rel} is missing"
        if want and got != want:
            return None, f"{rel} is not the file that was built (sha256 {got[:12]}, build.json: {want[:12]})"
    return info, None


_digests: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (inode, size, mtime) so a process hashes each published file once."""
    st = path.stat()
    ident = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if ident not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _digests[ident] = h.hexdigest()
    return _digests[ident]


def published_digests(bdir: Path, rels: list[str]) -> dict[str, str]:
    """{relative path: sha256} of the files a build publishes, for build.json's file_sha256."""
    return {rel: file_sha256(bdir / rel) for rel in rels}


def guest_kernel(spec: KernelSpec, info: dict) -> GuestKernel:
    """The bootable kernel a published build (its build.json `info`) provides for `spec`."""
    bdir = kernel_cache() / "builds" / info["key"]
    extra = {guest: bdir / rel for guest, rel in info.get("extra_files", {}).items()}
    record = KernelRecord.model_validate(info["record"])
    record = record.model_copy(update={
        "spec": spec.text, "config": str(bdir / "config"),
        "slug": record.slug if spec.kind == "tree" else spec.slug,
        **({"stack": spec.stack, "expanded": spec.expanded} if spec.stack is not None else {})})
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
    out: list[dict] = []
    bdir = kernel_cache() / "builds"
    if not bdir.is_dir():
        return out
    for d in bdir.iterdir():
        if d.name.startswith("."):
            continue
        info = load_build(d.name)
        if info is None:
            continue
        info["dir"] = str(d)
        info["bzimage_size"] = (d / "bzImage").stat().st_size
        out.append(info)
    out.sort(key=lambda i: i.get("built_at", ""))
    return out


def damaged_builds() -> list[tuple[str, str]]:
    """(key, what is wrong) of every published build that is no longer what was built."""
    bdir = kernel_cache() / "builds"
    out = []
    for d in sorted(bdir.iterdir()) if bdir.is_dir() else []:
        if not d.name.startswith("."):
            problem = check_build(d.name)[1]
            if problem:
                out.append((d.name, problem))
    return out


def publish(key: str, tmp: Path, info: dict):
    """Write build.json into the finished builds/.tmp-<key> and rename it to builds/<key>.

    An existing builds/<key> (a damaged one being replaced) is first renamed aside, so at every instant
    builds/<key> is either the old entry or the new one, never half of each."""
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    final = tmp.parent / key
    old = tmp.parent / f".old-{key}-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
