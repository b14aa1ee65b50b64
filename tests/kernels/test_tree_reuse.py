"""A build takes over the worktree of a published build (its objects kept) instead of a fresh worktree: make
compiles only what the new series change, and the image is the one a fresh worktree gives."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.kernels import build as kb
from harness.kernels import cache as kcache
from harness.kernels import gitops, takeover
from harness.kernels import tree as kt
from harness.kernels.inputs import load_base, load_series
from harness.kernels.spec import parse_kernel_spec

FIXTURE_PATCHES = Path(__file__).parent.parent / "data" / "kernel_build" / "patches"


def test_the_donor_is_the_published_tree_sharing_the_most_leading_patches(tmp_path, monkeypatch):
    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path / "cache"))
    trees = kcache.kernel_cache() / "trees"
    trees.mkdir()
    a, b = load_series("trivial-comment", FIXTURE_PATCHES), load_series("docs-only", FIXTURE_PATCHES)

    def published(key: str, series, tree: bool = True, ready: bool = True, config: str = "plain",
                  objects: str | None = None, image: bytes = b"x") -> None:
        """objects: the config the worktree's objects have, when not the build's; image: the worktree's bzImage,
        another build's when the tree was recreated without a build."""
        bdir = kcache.kernel_cache() / "builds" / key
        bdir.mkdir(parents=True)
        (bdir / "bzImage").write_bytes(b"x")
        (bdir / "config").write_text(f"CONFIG_{config}=y\n")
        info = {"key": key, "tree": str(trees / key) if tree else {"path": "/src/linux"},
                "config_fragment_sha256": config, "bzimage_sha256": hashlib.sha256(b"x").hexdigest(),
                "series": [{"name": s.name, "patches": [{"file": p.file, "sha256": p.sha256} for p in s.patches]}
                           for s in series]}
        (bdir / "build.json").write_text(json.dumps(info))
        (trees / key).mkdir()
        (trees / key / ".config").write_text(f"CONFIG_{objects or config}=y\n")
        (trees / key / "arch/x86/boot").mkdir(parents=True)
        (trees / key / "arch/x86/boot/bzImage").write_bytes(image)
        if ready:
            (trees / f"{key}.ready").write_text("head\n")

    def load_build(key: str) -> dict | None:
        record = kcache.kernel_cache() / "builds" / key / "build.json"
        return json.loads(record.read_text()) if record.is_file() else None

    monkeypatch.setattr(takeover, "load_build", load_build)
    assert takeover.choose_donor(trees, "new", [a, b]) is None
    (trees / "orphan").mkdir()  # its build failed, or its record was removed: the last choice, not a leak
    (trees / "orphan.ready").write_text("head\n")
    assert takeover.choose_donor(trees, "new", [a, b]) == ("orphan", [])
    published("base", [])
    assert takeover.choose_donor(trees, "new", [a, b])[0] == "base"  # any built tree beats a fresh worktree
    published("with-a", [a])
    published("with-b", [b])  # shares nothing with a+b's first patch
    published("user-clone", [a, b], tree=False)  # a --tree build's clone: never taken over
    published("half", [a, b], ready=False)  # no .ready: not a complete worktree
    assert takeover.choose_donor(trees, "new", [a, b])[0] == "with-a"
    assert takeover.choose_donor(trees, "with-a", [a])[0] == "base"  # never itself; of those sharing nothing, the fewest patches
    assert takeover.shared_patches(takeover.patch_list([a, b]), takeover.patch_list([a])) == len(a.patches)
    assert takeover.shared_patches(takeover.patch_list([a]), takeover.patch_list([a, b])) == len(a.patches)
    assert takeover.shared_patches(takeover.patch_list([b, a]), takeover.patch_list([a, b])) == 0
    # the same configuration first: another one recompiles nearly every object, whatever the patches share
    assert takeover.choose_donor(trees, "new", [a, b], "plain")[0] == "with-a"
    assert takeover.choose_donor(trees, "new", [a, b], "debug")[0] == "with-a"  # none has it: patches decide
    published("debug-base", [], config="debug")
    assert takeover.choose_donor(trees, "new", [a, b], "debug")[0] == "debug-base"
    published("debug-a", [a], config="plain", objects="debug")  # recreated from debug-base for the selftests
    assert takeover.choose_donor(trees, "new", [a, b], "plain")[0] == "with-a"
    assert takeover.choose_donor(trees, "new", [a, b], "debug")[0] == "debug-base"
    # recreated for the selftests from a build of the same config: its .config is right, its objects are not
    published("plain-ab", [a, b], image=b"another build's image")
    assert takeover.choose_donor(trees, "new", [a, b], "plain")[0] == "with-a"


@pytest.mark.kernelbuild
def test_a_build_in_a_taken_over_tree_compiles_little_and_gives_a_fresh_trees_image(capsys, monkeypatch):
    """base+trivial-comment (a comment in mm/page_alloc.c, on an unchanged line count) is built in base's
    worktree: ccache is asked for a handful of objects, and the image is base's byte for byte, as a fresh
    worktree's is (the build counter that would say "#2" is reset)."""
    base = kb.build_kernel(parse_kernel_spec("base"))
    spec = parse_kernel_spec("base+trivial-comment")
    key = kb.build_key(spec, patches_root=FIXTURE_PATCHES)
    shutil.rmtree(kcache.kernel_cache() / "builds" / key, ignore_errors=True)
    trees = kcache.kernel_cache() / "trees"
    base_tree = trees / base.record.cache_key
    base_info = kcache.load_build(base.record.cache_key)
    if not (trees / f"{base.record.cache_key}.ready").is_file() or \
            takeover.objects_config(base_tree, base_info) != base_info["config_fragment_sha256"]:
        # taken over by an earlier build, or recreated for the selftests from another build's tree: build again
        shutil.rmtree(kcache.kernel_cache() / "builds" / base.record.cache_key)
        base = kb.build_kernel(parse_kernel_spec("base"))
    monkeypatch.setattr(takeover, "choose_donor", lambda *a: (base.record.cache_key, []))  # which tree: the test above
    capsys.readouterr()
    try:
        kernel = kb.build_kernel(spec, patches_root=FIXTURE_PATCHES)
        err = capsys.readouterr().err
        assert f"building in the worktree of build {base.record.cache_key[:12]}" in err, err
        info = kcache.load_build(key)
        assert info is not None and info["tree"] == str(trees / key)
        assert not (trees / base.record.cache_key).exists() and (trees / f"{key}.ready").is_file()
        compiled = info["ccache"]["hits"] + info["ccache"]["misses"]
        assert 0 < compiled < 100, info["ccache"]  # a fresh worktree asks ccache for every object (about 1300)
        log = (kcache.kernel_cache() / "builds" / key / "build.log").read_text()
        rebuilt = re.findall(r"^\s+(?:CC|LD|AR|LINK)\s+\S*tools/objtool/\S*", log, re.MULTILINE)
        assert not rebuilt, rebuilt  # objtool's commands name its absolute paths: rewritten for the new place
        assert kernel.bzimage.read_bytes() == base.bzimage.read_bytes()
        assert kb.build_kernel(parse_kernel_spec("base")).bzimage == base.bzimage  # still served from the cache
    finally:
        shutil.rmtree(kcache.kernel_cache() / "builds" / key, ignore_errors=True)
        (trees / f"{key}.ready").unlink(missing_ok=True)
        gitops.remove_worktree(kt.ensure_base_repo(load_base()), trees / key)  # 1.5 GB no build of the cache names
