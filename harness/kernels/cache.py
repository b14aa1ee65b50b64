"""The kernel build cache on disk: where things live, its locks, and published builds.

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

The build key is the sha256 of every input that decides the output (see :func:`harness.kernels.inputs.compute_key`);
a cache hit only hashes the inputs and reads ``builds/<key>/build.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from pathlib import Path

from harness.kernels.spec import GuestKernel, KernelSpec
from harness.paths import cache_root


def kernel_cache() -> Path:
    """cache_root()/kernel, created if missing."""
    d = cache_root() / "kernel"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def flock(name: str):
    """Hold locks/<name>.lock exclusively (one per build key, "src" for the base repo)."""
    d = kernel_cache() / "locks"
    d.mkdir(exist_ok=True)
    with open(d / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_build(key: str) -> dict | None:
    """builds/<key>/build.json if that build is complete (its bzImage is there), else None."""
    bdir = kernel_cache() / "builds" / key
    try:
        info = json.loads((bdir / "build.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not (bdir / "bzImage").is_file() or info.get("key") != key:
        return None
    return info


def guest_kernel(spec: KernelSpec, info: dict) -> GuestKernel:
    """The bootable kernel a published build (its build.json `info`) provides for `spec`."""
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


def publish(key: str, tmp: Path, info: dict):
    """Write build.json into the finished builds/.tmp-<key> and rename it to builds/<key> (replacing any)."""
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    final = tmp.parent / key
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)

