"""Build guest kernels, cached: the pinned base with patch series applied, or a developer's own checkout
(``--tree``), configured from the config fragments and compiled with make under a rich progress bar.

What goes into a build and its key: :mod:`harness.kernels.inputs`; the source trees: :mod:`harness.kernels.tree`;
running make: :mod:`harness.kernels.make`; ``--tree``: :mod:`harness.kernels.tree_build`; the config checks:
:mod:`harness.kernels.config`; where builds are cached: :mod:`harness.kernels.cache`; patches that build
nothing: :mod:`harness.kernels.reuse`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, InputError
from harness.kernels import reuse
from harness.kernels.cache import check_build, flock, guest_kernel, kernel_cache, load_build, publish
from harness.kernels.flavours import Flavour, load_flavours
from harness.kernels.inputs import (
    compute_key,
    fragment_sha256,
    gcc_version,
    load_base,
    load_fragments,
    load_stack,
    module_source_sha256,
    snapshot_inputs,
)
from harness.kernels.make import (  # noqa: F401 (error_excerpt, UNIT_LINE, CONTIG_BENCH_GUEST_PATH: public here)
    CONTIG_BENCH_GUEST_PATH,
    UNIT_LINE,
    Checkout,
    build_info,
    ensure_ccache,
    error_excerpt,
    removed_on_error,
    run_build,
    staging_dir,
)
from harness.kernels.progress import Reporter
from harness.kernels.spec import GuestKernel, KernelSpec
from harness.kernels.tree import check_package, ensure_base_repo, prepare_tree
from harness.kernels.tree_build import build_tree

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


def _published(key: str) -> dict:
    """The build record of `key`, which has just been published."""
    info = load_build(key)
    if info is None:
        raise HarnessError(f"kernel build {key[:12]}: published, but its build record cannot be read")
    return info


def build_kernel(spec: KernelSpec | None, *, fragments: list[Path | str] | None = None,
                 tree: Path | str | None = None, progress=None,
                 patches_root: Path | str | None = None, tree_rev: str | None = None) -> GuestKernel:
    """Build (or fetch from cache) the guest kernel a ``base[+SERIES...]`` spec names.

    fragments: extra config fragments merged after kernel_patches/config/guest.config.
    tree: build this kernel checkout instead of the pinned base (spec must be None or "base"); tree_rev: only
    that commit of it (its uncommitted changes left out), without checking it out there.
    progress: a rich Progress owned by the caller to add tasks to (else one on stderr).
    patches_root: where series directories live (default $BALLOON_TESTBED_PATCHES or kernel_patches/).
    """
    if tree is not None:
        return build_tree(spec, Path(tree), fragments, progress, rev=tree_rev)
    if spec is None:
        raise InputError("kernel build: give a spec (base or base+SERIES...) or a tree")
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
                reuse.publish_reuse(key, spec.text, spec.slug, below, staging_dir(key), t_start, series=series,
                                    frags=frags)
                rep.log(f"kernel build: {spec.text}: not built, {below.describe()}")
                return flavoured(guest_kernel(spec, _published(key)), flavours)
            ensure_ccache()
            timings: dict = {}
            t = time.monotonic()
            check_package(base, rep)
            src = ensure_base_repo(base, progress=rep.progress)
            timings["base_s"] = round(time.monotonic() - t, 2)
            tmp = staging_dir(key)
            with removed_on_error(tmp):
                (tmp / "series").mkdir()
                frag_paths, mod_copy = snapshot_inputs(tmp, series, frags, mod_sha)
                t = time.monotonic()
                wtree = prepare_tree(src, key, series, rep, snapshot=tmp / "series", config=fragment_sha256(frags))
                timings["tree_s"] = round(time.monotonic() - t, 2)
            checkout = Checkout(srcdir=wtree, make_args=[], objdir=wtree, ccache_basedir=wtree, label=spec.text,
                                 log_header=f"# harness kernel build {spec.text} key {key}\n# tree {wtree}\n")
            built = run_build(key, tmp, rep, checkout, frags, frag_paths, mod_copy, timings, t_start, (lock,))
            bdir = kernel_cache() / "builds" / key
            series_rec = [{"name": s.name, "patches": [{"file": p.file, "sha256": p.sha256} for p in s.patches],
                           "of": s.total} for s in series]
            info = build_info(key, spec.text, spec.slug, built, series_rec, frags, gcc, mod_sha, timings,
                               record_base={"package": base.package, "version": base.version},
                               info_base={"package": base.package, "version": base.version,
                                          "kernel_version": base.kernel_version},
                               extra={"tree": str(wtree)})
            publish(key, tmp, info)
            rep.log(f"built {spec.text} ({built.release}) in {timings['total_s']:.0f} s "
                    f"(ccache: {built.ccache['hits']} hits, {built.ccache['misses']} misses): {bdir / 'bzImage'}")
    return flavoured(guest_kernel(spec, _published(key)), flavours)


def flavoured(kernel: GuestKernel, flavours: list[Flavour]) -> GuestKernel:
    """The kernel with its flavours' boot parameters and their provenance in its record."""
    if not flavours:
        return kernel
    record = kernel.record.model_copy(update={"flavours": [
        {"name": f.name, "fragment_sha256": hashlib.sha256(f.fragment.read_bytes()).hexdigest(),
         "boot": f.boot_params or None} for f in flavours]})
    return replace(kernel, record=record, cmdline=" ".join(f.boot_params for f in flavours if f.boot_params))
