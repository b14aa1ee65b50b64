"""``--tree``: build a developer's own kernel checkout with the guest config, cached by its exact state.

The checkout is never written to: its sources (HEAD, uncommitted diff, untracked files) are synced into a
cached clone (:func:`harness.kernels.tree.sync_user_tree`) and built there in-tree, exactly as the series
worktrees are, so ccache serves every object a series build of the same sources compiled.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from harness.errors import InputError
from harness.kernels import reuse
from harness.kernels.cache import check_build, flock, guest_kernel, kernel_cache, load_build, publish
from harness.kernels.inputs import compute_key, gcc_version, load_fragments, module_source_sha256, snapshot_inputs
from harness.kernels.make import Checkout, build_info, ensure_ccache, removed_on_error, run_build, staging_dir
from harness.kernels.progress import Reporter
from harness.kernels.spec import GuestKernel, KernelSpec
from harness.kernels.tree import committed_state, sync_user_tree, tree_state, user_checkout


def build_tree(spec: KernelSpec | None, path: Path, fragments, progress, rev: str | None = None) -> GuestKernel:
    """Build the checkout as it is (HEAD, uncommitted diff, untracked files), or only its commit `rev`."""
    if spec is not None:
        text = spec.text
        if text != "base":
            raise InputError(f"--tree builds the checkout as it is: the spec must be omitted or 'base', "
                             f"got {text!r} (apply series in your tree instead)")
    path = path.expanduser().resolve()
    if not (path / "Makefile").is_file() or not (path / "scripts/kconfig/merge_config.sh").is_file():
        raise InputError(f"--tree {path}: not a kernel source tree (no Makefile / scripts/kconfig/merge_config.sh)")
    t_start = time.monotonic()
    state = tree_state(path) if rev is None else committed_state(path, rev)
    frags = load_fragments(fragments)
    gcc = gcc_version()
    mod_sha = module_source_sha256()
    key = compute_key({"tree": state}, [], frags, gcc, mod_sha)
    kspec = KernelSpec(f"tree:{path}@{state['head']}", "tree", path=path)
    info, damaged = check_build(key)
    if info is not None:
        return guest_kernel(kspec, info)
    with Reporter(progress) as rep:
        if damaged:
            rep.log(f"kernel build: the cached build of {path} at {state['head'][:12]} (key {key[:12]}) is "
                    f"damaged: {damaged}; building it again")

        def waiting() -> None:
            rep.log(f"kernel build: another process is building {path} at {state['head'][:12]}: waiting for it")

        with flock(key, waiting=waiting) as lock:
            info = load_build(key)
            if info is not None:
                return guest_kernel(kspec, info)
            slug = "tree-" + re.sub(r"[^A-Za-z0-9._-]", "_", path.name) + "-" + state["head"][:12]
            record_base = {"package": None, "version": None, "tree": str(path), "head": state["head"],
                           "dirty": state["dirty"]}
            below = reuse.find_below_commit(path, state, frags, gcc, mod_sha)
            if below is not None:
                info = reuse.publish_reuse(key, kspec.text, slug, below, staging_dir(key), t_start,
                                           info_updates={"tree": state}, record_updates={"base": record_base})
                rep.log(f"kernel build: {path} at {state['head'][:12]}: not built, {below.describe()}")
                return guest_kernel(kspec, info)
            ensure_ccache()
            timings: dict = {}
            tmp = staging_dir(key)
            with removed_on_error(tmp):
                frag_paths, mod_copy = snapshot_inputs(tmp, [], frags, mod_sha)
            co, co_lock = user_checkout(path)
            with flock(co_lock, waiting=lambda: rep.log(f"kernel build: waiting for another build in {co}")) as lock2:
                t = time.monotonic()
                with removed_on_error(tmp):
                    sync_user_tree(path, state, rep, local_changes=rev is None)
                timings["tree_s"] = round(time.monotonic() - t, 2)
                checkout = Checkout(srcdir=co, make_args=[], objdir=co, ccache_basedir=co, label=f"tree {path.name}",
                                     log_header=f"# harness kernel build --tree {path} key {key}\n# built in {co}\n")
                built = run_build(key, tmp, rep, checkout, frags, frag_paths, mod_copy, timings, t_start,
                                   (lock, lock2))
            bdir = kernel_cache() / "builds" / key
            info = build_info(key, kspec.text, slug, built, [], frags, gcc, mod_sha, timings, record_base=record_base,
                              info_base=None, extra={"tree": state, "objdir": str(co)})
            publish(key, tmp, info)
            rep.log(f"built tree {path} ({built.release}) in {timings['total_s']:.0f} s "
                    f"(ccache: {built.ccache['hits']} hits, {built.ccache['misses']} misses): {bdir / 'bzImage'}")
    return guest_kernel(kspec, info)
