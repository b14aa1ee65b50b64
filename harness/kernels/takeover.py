"""Taking over the worktree of a published build: make then compiles only what the new build's patches change,
instead of a fresh worktree's 1960 objects through ccache."""

from __future__ import annotations

import os
from pathlib import Path

from harness.kernels.cache import file_sha256, flock, flock_if_free, kernel_cache, load_build
from harness.kernels.gitops import git_in, remove_worktree
from harness.kernels.inputs import Series
from harness.kernels.progress import Reporter


def patch_list(series: list[Series]) -> list[tuple[str, str]]:
    return [(s.name, p.sha256) for s in series for p in s.patches]


def patch_ids(info: dict) -> list[tuple[str, str]]:
    return [(s["name"], p["sha256"]) for s in info.get("series") or [] for p in s.get("patches") or []]


def shared_patches(want: list[tuple[str, str]], have: list[tuple[str, str]]) -> int:
    return next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))


def choose_donor(trees: Path, key: str, series: list[Series],
                 config: str | None = None) -> tuple[str, list[tuple[str, str]]] | None:
    """The worktree of a published build to build `key` in: one whose objects have the same configuration
    (another config recompiles about 1150 objects), then the one sharing the most leading patches with it,
    then the one with the fewest others, then the newest.  make then compiles only the files whose patches
    differ, instead of a fresh worktree's 1960 objects through ccache.  Last, a worktree that no build names
    (its build failed, or its record was removed): taken rather than left on the disk for good, and cheaper
    than a fresh checkout.  Returns its key and its patches."""
    want = patch_list(series)
    best: tuple[bool, bool, int, int, float, str, list[tuple[str, str]]] | None = None
    for ready in trees.glob("*.ready"):
        donor = ready.name.removesuffix(".ready")
        if donor == key or donor.startswith("user-") or not (trees / donor).is_dir():
            continue  # a --tree clone is never taken over
        info = load_build(donor)
        if info is not None and info.get("tree") != str(trees / donor):
            continue  # a build of a --tree clone
        have = patch_ids(info) if info is not None else []
        shared = shared_patches(want, have)
        same_config = info is not None and config is not None and objects_config(trees / donor, info) == config
        rank = (info is not None, same_config, shared, shared - len(have), ready.stat().st_mtime, donor, have)
        if best is None or rank > best:
            best = rank
    return (best[5], best[6]) if best else None


def objects_config(tree: Path, info: dict) -> str | None:
    """The config fragment digest the objects in a build's worktree were compiled with: the build's, while the
    tree's .config and bzImage are the ones the build published.  A worktree recreated for its key without a
    build (to build the selftests in) holds the objects of the build it was taken from, whose image differs even
    where its .config is the same: None."""
    try:
        same = ((tree / ".config").read_bytes() == (kernel_cache() / "builds" / info["key"] / "config").read_bytes()
                and file_sha256(tree / "arch/x86/boot/bzImage") == info.get("bzimage_sha256"))
    except (OSError, KeyError):
        return None
    return info.get("config_fragment_sha256") if same else None


def adopt_tree(src: Path, trees: Path, key: str, series: list[Series], rep: Reporter,
               config: str | None = None) -> int | None:
    """Move a published build's worktree to trees/<key> and check out in it the commit of the patches the two
    share (the build's objects stay, older than every file the other patches touch); returns how many patches
    are applied there already, None when there is no tree free to take."""
    found = choose_donor(trees, key, series, config)
    if found is None:
        return None
    donor, have = found
    with flock_if_free(donor) as mine, flock_if_free(f"{donor}-selftests") as selftests:
        if mine is None or selftests is None or not (trees / f"{donor}.ready").is_file():
            return None  # being rebuilt or read: build beside it
        with flock("src"), rep.status(f"taking over trees/{donor[:12]} (built) as trees/{key[:12]}"):
            (trees / f"{donor}.ready").unlink()
            remove_worktree(src, trees / key)
            git_in(src, "worktree", "move", str(trees / donor), str(trees / key),
                   what=f"git worktree move {donor[:12]}")
    tree = trees / key
    rehome_tool_commands(tree, trees / donor)
    shared = shared_patches(patch_list(series), have)
    target = f"HEAD~{len(have) - shared}"
    if git_in(tree, "rev-list", "--count", "base..HEAD").stdout.strip() != str(len(have)):
        shared, target = 0, "base"  # not one commit per patch on the base: start from the base
    # Only the files that differ between the two commits change (and get a new mtime): make rebuilds what they
    # touch, nothing the shared patches changed.
    git_in(tree, "checkout", "-q", "-f", "--detach", target, what="git checkout")
    # The kernel counts its builds in .version ("#2" in the version string): without it, this tree's image is
    # byte for byte a fresh worktree's.
    (tree / ".version").unlink(missing_ok=True)
    rep.log(f"kernel build: building in the worktree of build {donor[:12]} (its objects kept, its first {shared} "
            f"patch(es) kept applied: make compiles what the others change)")
    return shared


def rehome_tool_commands(tree: Path, old: Path) -> None:
    """objtool (under tools/) is built with absolute paths: its .cmd files name the commands and dependencies
    of the worktree's old place.  Moved, make would take those dependencies as missing and rebuild objtool
    (27 compile and link lines, about 1.5 s of every build in a taken-over tree).  Rewrite them to the new
    place, keeping their mtimes."""
    before, after = str(old).encode(), str(tree).encode()
    for cmd in (tree / "tools").rglob(".*.cmd"):
        data = cmd.read_bytes()
        if before in data:
            st = cmd.stat()
            cmd.write_bytes(data.replace(before, after))
            os.utime(cmd, ns=(st.st_atime_ns, st.st_mtime_ns))
