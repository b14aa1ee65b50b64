"""Kernel build stage: series parsing, cache keys, config checks, cache hits, failing patches, real builds."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import pytest

from harness.commands import kernel as kcmd
from harness.errors import HarnessError, InputError
from harness.kernels import build as kb
from harness.kernels import cache as kcache
from harness.kernels import config as kconf
from harness.kernels import gitops
from harness.kernels import inputs as ki
from harness.kernels import tree as kt
from harness.kernels.progress import Reporter
from harness.kernels.spec import parse_kernel_spec

DATA = Path(__file__).parent.parent / "data" / "kernel_build"
FIXTURE_PATCHES = DATA / "patches"

MAIL = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Test <test@example.org>
Date: Thu, 1 Jan 2026 00:00:00 +0000
Subject: [PATCH] {subject}

---
diff --git a/mm/x.c b/mm/x.c
--- a/mm/x.c
+++ b/mm/x.c
@@ -1 +1 @@
-a
+{line}
"""


def make_series(root: Path, name: str, patches: dict[str, str], order: list[str] | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in patches.items():
        (d / fname).write_text(text)
    (d / "series").write_text("# test series\n\n" + "\n".join(order or list(patches)) + "\n")
    return d


def key_for(root: Path, names: list[str], frags=None, gcc="gcc (Debian 12.2.0-14) 12.2.0", module=None):
    base = ki.load_base()
    return ki.compute_key(base, [ki.load_series(n, root) for n in names], frags or ki.load_fragments(), gcc, module)


# ---- series files


def test_parse_series_file_skips_comments_and_blanks():
    text = "# a comment\n\n0001-a.patch\n  0002-b.patch   # trailing comment\n\t\n#0003-c.patch\n0004-d.patch -p1\n"
    assert ki.parse_series_file(text) == ["0001-a.patch", "0002-b.patch", "0004-d.patch"]


@pytest.mark.parametrize("line", ["0001-a.patch -p0", "../evil.patch", "/etc/passwd"])
def test_parse_series_file_rejects(line):
    with pytest.raises(InputError):
        ki.parse_series_file(line + "\n")


def test_load_series(tmp_path):
    make_series(tmp_path, "A", {"0001-x.patch": MAIL.format(subject="x", line="b"),
                                "0002-y.patch": MAIL.format(subject="y", line="c")})
    s = ki.load_series("A", tmp_path)
    assert s.name == "A"
    assert [p.file for p in s.patches] == ["0001-x.patch", "0002-y.patch"]
    assert all(len(p.sha256) == 64 for p in s.patches)


def test_load_series_errors_name_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="nope"):
        ki.load_series("nope", tmp_path)
    (tmp_path / "noseries").mkdir()
    with pytest.raises(InputError, match=r"noseries.*series"):
        ki.load_series("noseries", tmp_path)
    make_series(tmp_path, "missing", {}, order=["0001-gone.patch"])
    with pytest.raises(InputError, match="0001-gone.patch"):
        ki.load_series("missing", tmp_path)
    make_series(tmp_path, "empty", {}, order=[])
    with pytest.raises(InputError, match="no patches"):
        ki.load_series("empty", tmp_path)


def test_patches_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv(ki.PATCHES_ENV, str(tmp_path))
    assert ki.patches_root() == tmp_path.resolve()
    assert ki.patches_root(FIXTURE_PATCHES) == FIXTURE_PATCHES.resolve()
    monkeypatch.delenv(ki.PATCHES_ENV)
    assert ki.patches_root() == ki.DEFAULT_PATCHES_ROOT.resolve()


def test_fixture_series_parse():
    s = ki.load_series("bad-sublevel", FIXTURE_PATCHES)
    assert [p.file for p in s.patches] == ["0001-bump-sublevel-999.patch"]


# ---- cache key


@pytest.fixture
def two_series(tmp_path):
    make_series(tmp_path, "A", {"0001-x.patch": MAIL.format(subject="x", line="b"),
                                "0002-y.patch": MAIL.format(subject="y", line="c")})
    make_series(tmp_path, "B", {"0001-z.patch": MAIL.format(subject="z", line="d")})
    return tmp_path


def test_key_is_stable(two_series):
    assert key_for(two_series, ["A", "B"]) == key_for(two_series, ["A", "B"])
    assert len(key_for(two_series, ["A", "B"])) == 64


def test_key_changes_with_one_byte_of_one_patch(two_series):
    before = key_for(two_series, ["A", "B"])
    p = two_series / "A" / "0002-y.patch"
    p.write_text(p.read_text().replace("+c", "+C"))
    assert key_for(two_series, ["A", "B"]) != before


def test_key_changes_with_order(two_series):
    assert key_for(two_series, ["A", "B"]) != key_for(two_series, ["B", "A"])
    before = key_for(two_series, ["A"])
    (two_series / "A" / "series").write_text("0002-y.patch\n0001-x.patch\n")
    assert key_for(two_series, ["A"]) != before


def test_key_changes_with_series_and_base(two_series):
    assert key_for(two_series, []) != key_for(two_series, ["A"])
    base = ki.load_base()
    other = ki.BaseInfo(base.package, "6.12.118-1~deb12u1", "6.12.118", base.tarball, base.tarball_dir)
    frags = ki.load_fragments()
    assert ki.compute_key(base, [], frags, "gcc", None) != ki.compute_key(other, [], frags, "gcc", None)


def test_key_changes_with_fragment_gcc_module(two_series, tmp_path):
    frag = tmp_path / "extra.config"
    frag.write_text("CONFIG_DEBUG_INFO_NONE=y\n")
    k0 = key_for(two_series, ["A"])
    k1 = key_for(two_series, ["A"], frags=ki.load_fragments([frag]))
    frag.write_text("CONFIG_DEBUG_INFO_NONE=n\n")
    k2 = key_for(two_series, ["A"], frags=ki.load_fragments([frag]))
    assert len({k0, k1, k2}) == 3
    assert key_for(two_series, ["A"], gcc="gcc 13") != k0
    assert key_for(two_series, ["A"], module="abc") != k0


def test_missing_fragment_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nofile"):
        ki.load_fragments([tmp_path / "nofile.config"])


def test_module_source_hash(tmp_path):
    assert ki.module_source_sha256(tmp_path / "absent") is None
    (tmp_path / "contig_bench.c").write_text("int x;\n")
    (tmp_path / "Makefile").write_text("obj-m := contig_bench.o\n")
    h = ki.module_source_sha256(tmp_path)
    (tmp_path / "contig_bench.o").write_bytes(b"\0\1")  # build artifacts do not count
    (tmp_path / ".contig_bench.o.cmd").write_text("x")
    assert ki.module_source_sha256(tmp_path) == h
    (tmp_path / "contig_bench.c").write_text("int y;\n")
    assert ki.module_source_sha256(tmp_path) != h


# ---- config fragment checks


def test_dropped_options():
    frag = ki.Fragment(Path("f"), b"CONFIG_A=y\nCONFIG_B=8\n# CONFIG_C is not set\n# comment\nCONFIG_D=y\n")
    wants = kconf.parse_fragment_wants([frag, ki.Fragment(Path("g"), b"# CONFIG_D is not set\n")])
    assert wants == {"CONFIG_A": "y", "CONFIG_B": "8", "CONFIG_C": None, "CONFIG_D": None}
    config = "CONFIG_A=y\nCONFIG_B=8\n# CONFIG_C is not set\n"
    assert kconf.dropped_options(wants, config) == []
    bad = kconf.dropped_options(wants, "CONFIG_B=4\nCONFIG_C=y\nCONFIG_D=m\n")
    assert [b.split(":")[0] for b in bad] == ["CONFIG_A", "CONFIG_B", "CONFIG_C", "CONFIG_D"]


def test_default_fragment_wants_what_the_issue_needs():
    wants = kconf.parse_fragment_wants(ki.load_fragments())
    for opt in ("CONFIG_MODULES", "CONFIG_VM_EVENT_COUNTERS", "CONFIG_VIRTIO_BALLOON", "CONFIG_PAGE_REPORTING"):
        assert wants[opt] == "y"


def test_error_excerpt():
    log = "\n".join([f"  CC      f{i}.o" for i in range(100)]
                    + ["mm/x.c:3:1: error: expected ';'", "   3 | foo", "make[3]: *** [x.o] Error 1"]
                    + [f"  CC      g{i}.o" for i in range(5)])
    ex = kb.error_excerpt(log)
    assert "error: expected ';'" in ex and "Error 1" in ex
    assert len(ex.splitlines()) <= 30
    assert kb.error_excerpt("a\nb\n") == "a\nb"


def test_unit_line_regex():
    assert kb.UNIT_LINE.match("  CC      mm/page_alloc.o")
    assert kb.UNIT_LINE.match("  CC [M]  /x/contig_bench.o")
    assert kb.UNIT_LINE.match("  AR      mm/built-in.a")
    assert not kb.UNIT_LINE.match("mm/x.c:1:2: warning: CC")
    assert not kb.UNIT_LINE.match("    3 | CC")


# ---- cache hit without building, list, CLI


def _fake_cached_build(monkeypatch, tmp_path, spec_text="base"):
    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path / "cache"))
    spec = parse_kernel_spec(spec_text)
    base = ki.load_base()
    frags = ki.load_fragments()
    key = ki.compute_key(base, [], frags, ki.gcc_version(), ki.module_source_sha256())
    bdir = kcache.kernel_cache() / "builds" / key
    (bdir / "modules").mkdir(parents=True)
    (bdir / "bzImage").write_bytes(b"fake")
    (bdir / "modules" / "contig_bench.ko").write_bytes(b"ko")
    record = {"spec": "base", "slug": "base", "version": "6.12.117+", "sha256": "0" * 64, "cache_key": key,
              "config": "x", "config_fragment_sha256": ki.fragment_sha256(frags), "series": [],
              "base": {"package": base.package, "version": base.version}}
    (bdir / "build.json").write_text(json.dumps({
        "key": key, "spec": "base", "kernelrelease": "6.12.117+", "built_at": "2026-01-01T00:00:00+00:00",
        "extra_files": {kb.CONTIG_BENCH_GUEST_PATH: "modules/contig_bench.ko"}, "record": record,
        "bzimage_sha256": hashlib.sha256(b"fake").hexdigest(),
        "file_sha256": {"bzImage": hashlib.sha256(b"fake").hexdigest(),
                        "modules/contig_bench.ko": hashlib.sha256(b"ko").hexdigest()}}))
    return spec, key, bdir


def test_cache_hit_is_fast_and_builds_nothing(monkeypatch, tmp_path):
    spec, key, bdir = _fake_cached_build(monkeypatch, tmp_path)
    monkeypatch.setattr(kb, "ensure_base_repo", lambda *a, **k: pytest.fail("cache hit must not extract"))
    t = time.monotonic()
    gk = kb.build_kernel(spec)
    assert time.monotonic() - t < 1.0
    assert gk.bzimage == bdir / "bzImage"
    assert gk.version == "6.12.117+"
    assert gk.modules == []
    assert gk.extra_files == {"/lib/modules/contig_bench.ko": bdir / "modules" / "contig_bench.ko"}
    assert gk.record.cache_key == key and gk.record.config == str(bdir / "config")
    assert gk.record.base == {"package": "linux-source-6.12", "version": "6.12.117-1~deb12u1"}


def test_half_published_build_is_not_a_hit(monkeypatch, tmp_path):
    spec, key, bdir = _fake_cached_build(monkeypatch, tmp_path)
    (bdir / "bzImage").unlink()
    assert kcache.load_build(key) is None
    assert kcache.list_cached() == []


def test_list_cached(monkeypatch, tmp_path):
    spec, key, bdir = _fake_cached_build(monkeypatch, tmp_path)
    (bdir.parent / ".tmp-deadbeef").mkdir()
    rows = kcache.list_cached()
    assert [r["key"] for r in rows] == [key]
    assert rows[0]["bzimage_size"] == 4


def _parser():
    p = argparse.ArgumentParser(prog="harness")
    kcmd.register(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_parses():
    args = _parser().parse_args(["kernel", "build", "base+A", "--config-fragment", "x.config",
                                 "--config-fragment", "y.config"])
    assert args.spec.text == "base+A" and args.config_fragment == ["x.config", "y.config"] and args.tree is None
    args = _parser().parse_args(["kernel", "build", "--tree", "/src/linux"])
    assert args.spec is None and args.tree == "/src/linux"
    assert _parser().parse_args(["kernel", "list"]).func is kcmd._cmd_list


def test_cli_build_prints_bzimage_last(monkeypatch, tmp_path, capsys):
    spec, key, bdir = _fake_cached_build(monkeypatch, tmp_path)
    args = _parser().parse_args(["kernel", "build", "base"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(bdir / "bzImage")
    args = _parser().parse_args(["kernel", "list"])
    assert args.func(args) == 0
    assert key[:12] in capsys.readouterr().out


def test_cli_build_rejects_bad_specs():
    for argv in (["kernel", "build"], ["kernel", "build", "stock"]):
        args = _parser().parse_args(argv)
        with pytest.raises(InputError):
            args.func(args)


def test_tree_mode_rejects_series_and_non_trees(tmp_path):
    with pytest.raises(InputError, match="spec"):
        kb.build_kernel(parse_kernel_spec("base+zeroing-stats"), tree=tmp_path)
    with pytest.raises(InputError, match="not a kernel source tree"):
        kb.build_kernel(None, tree=tmp_path)
    (tmp_path / "Makefile").write_text("all:\n")
    (tmp_path / "scripts" / "kconfig").mkdir(parents=True)
    (tmp_path / "scripts" / "kconfig" / "merge_config.sh").write_text("")
    (tmp_path / ".config").write_text("")  # in-tree artifacts are fine now: the build is never made in the tree
    with pytest.raises(InputError, match="not a git checkout"):
        kb.build_kernel(None, tree=tmp_path)


def test_sync_user_tree_copies_sources_not_build_outputs(monkeypatch, tmp_path):
    """The cache's copy of a --tree checkout: HEAD, the uncommitted diff (staged new files included) and
    untracked files; never its ignored build outputs, and nothing is written into the checkout."""
    import subprocess

    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "linux"
    tree.mkdir()

    def git(*a):
        subprocess.run(["git", *gitops.GIT_IDENTITY, "-C", str(tree), *a], check=True, capture_output=True)

    (tree / ".gitignore").write_text(".config\n*.o\n")
    (tree / "a.c").write_text("int a;\n")
    (tree / "gone.c").write_text("int gone;\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    (tree / "a.c").write_text("int a = 2;\n")
    (tree / "staged.c").write_text("int s;\n")
    git("add", "staged.c")
    (tree / "gone.c").unlink()
    (tree / "new.h").write_text("#define N 1\n")
    (tree / ".config").write_text("CONFIG_X=y\n")
    (tree / "a.o").write_bytes(b"\0")
    state = kt.tree_state(tree)
    co = kt.sync_user_tree(tree, state)
    assert co != tree and co.parent == kcache.kernel_cache() / "trees"
    assert (co / "a.c").read_text() == "int a = 2;\n" and (co / "staged.c").is_file() and (co / "new.h").is_file()
    assert not (co / "gone.c").exists() and not (co / ".config").exists() and not (co / "a.o").exists()
    (co / "a.o").write_bytes(b"built")  # a build output in the copy survives the next sync ...
    (tree / "new.h").unlink()  # ... the checkout's sources are followed
    git("commit", "-qam", "two")
    co2 = kt.sync_user_tree(tree, kt.tree_state(tree))
    assert co2 == co and (co / "a.o").read_bytes() == b"built"
    assert not (co / "new.h").exists() and not (co / "gone.c").exists() and (co / "staged.c").is_file()
    assert kt.tree_state(tree)["head"] == subprocess.run(["git", "-C", str(co), "rev-parse", "HEAD"],
                                                        capture_output=True, text=True).stdout.strip()
    # a bisect step: one commit alone, the checkout's own uncommitted changes and untracked files left out
    (tree / "a.c").write_text("int dirty;\n")
    (tree / "untracked.c").write_text("int u;\n")
    state = kt.committed_state(tree, "HEAD~1")
    assert not state["dirty"] and state["diff_sha256"] == kt.tree_state(_clean_copy(tree, tmp_path))["diff_sha256"]
    kt.sync_user_tree(tree, state, local_changes=False)
    assert (co / "a.c").read_text() == "int a;\n" and (co / "gone.c").is_file() and not (co / "staged.c").exists()
    assert not (co / "untracked.c").exists() and (tree / "a.c").read_text() == "int dirty;\n"
    with pytest.raises(InputError, match="no commit"):
        kt.committed_state(tree, "nosuchrev")


def _clean_copy(tree: Path, tmp_path: Path) -> Path:
    import subprocess

    clean = tmp_path / "clean"
    subprocess.run(["git", "clone", "-q", str(tree), str(clean)], check=True)
    return clean


def test_tree_state_tracks_diff_and_untracked(tmp_path):
    import subprocess

    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.c").write_text("a\n")
    git("add", "a.c")
    git("commit", "-qm", "a")
    s0 = kt.tree_state(tmp_path)
    assert not s0["dirty"]
    (tmp_path / "a.c").write_text("b\n")
    s1 = kt.tree_state(tmp_path)
    assert s1["diff_sha256"] != s0["diff_sha256"] and s1["dirty"]
    (tmp_path / "new.c").write_text("n\n")
    s2 = kt.tree_state(tmp_path)
    assert s2["untracked_sha256"] != s1["untracked_sha256"]


# ---- with the real base (extracts linux-source once, ~1.5 min cold)


@pytest.mark.kernelbuild
def test_failing_patch_names_series_patch_and_hunk():
    spec = parse_kernel_spec("base+bad-sublevel")
    with pytest.raises(HarnessError) as info:
        kb.build_kernel(spec, patches_root=FIXTURE_PATCHES)
    msg = str(info.value)
    assert not isinstance(info.value, InputError)
    assert "bad-sublevel" in msg
    assert "0001-bump-sublevel-999.patch" in msg
    assert "Makefile" in msg and "SUBLEVEL = 999" in msg  # the rejected hunk
    key = ki.compute_key(ki.load_base(), [ki.load_series("bad-sublevel", FIXTURE_PATCHES)], ki.load_fragments(),
                         ki.gcc_version(), ki.module_source_sha256())
    assert not (kcache.kernel_cache() / "trees" / key).exists()  # the half-made worktree is gone
    assert kcache.load_build(key) is None


@pytest.mark.kernelbuild
def test_build_base_cached():
    spec = parse_kernel_spec("base")
    gk = kb.build_kernel(spec)  # cold: ~12-20 min on 2 cores, much less with a warm ccache
    assert gk.bzimage.is_file() and gk.bzimage.stat().st_size > 500_000
    bdir = gk.bzimage.parent
    info = json.loads((bdir / "build.json").read_text())
    assert info["key"] == gk.record.cache_key
    assert info["base"]["version"] == "6.12.117-1~deb12u1"
    assert info["kernelrelease"].startswith("6.12.117")
    assert gk.version == info["kernelrelease"]
    assert info["gcc"].startswith("gcc")
    for f in ("config", "System.map", "build.log"):
        assert (bdir / f).is_file()
    config = (bdir / "config").read_text()
    assert "CONFIG_VM_EVENT_COUNTERS=y" in config.splitlines()
    assert "CONFIG_MODULES=y" in config.splitlines()
    assert gk.record.sha256 == info["bzimage_sha256"]
    for module in ("contig_bench", "zero_scan"):  # every test module in kernel_patches/modules/
        assert gk.extra_files[f"/lib/modules/{module}.ko"].is_file(), module
    t = time.monotonic()
    again = kb.build_kernel(spec)
    assert time.monotonic() - t < 1.0
    assert again.bzimage == gk.bzimage and again.record == gk.record
    assert any(r["key"] == info["key"] for r in kcache.list_cached())


def test_snapshot_inputs_writes_the_hashed_bytes(two_series, tmp_path):
    series = [ki.load_series("A", two_series)]
    frags = ki.load_fragments()
    # the originals change after hashing: the snapshot still has what the key was computed from
    (two_series / "A" / "0001-x.patch").write_text("changed\n")
    out = tmp_path / "build"
    out.mkdir()
    frag_paths, mod_copy = ki.snapshot_inputs(out, series, frags, None)
    assert mod_copy is None
    assert (out / "series" / "A" / "0001-x.patch").read_bytes() == series[0].patches[0].data
    assert (out / "series" / "A" / "series").is_file()
    assert [p.read_bytes() for p in frag_paths] == [f.data for f in frags]
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "contig_bench.c").write_text("int x;\n")
    out2 = tmp_path / "build2"
    out2.mkdir()
    _, mod_copy = ki.snapshot_inputs(out2, [], frags, ki.module_source_sha256(mod), mod_dir=mod)
    assert (mod_copy / "contig_bench.c").is_file()
    out3 = tmp_path / "build3"
    out3.mkdir()
    with pytest.raises(HarnessError, match="changed"):
        ki.snapshot_inputs(out3, [], frags, "0" * 64, mod_dir=mod)


def _tiny_repo(path: Path):
    import subprocess

    path.mkdir()
    (path / "Makefile").write_text("# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 12\n"
                                   "SUBLEVEL = 117\nEXTRAVERSION =\nNAME = Baby Opossum Posse\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"], ["tag", "base"]):
        subprocess.run(["git", *gitops.GIT_IDENTITY, "-C", str(path), *cmd], check=True, capture_output=True)
    return path


def test_apply_series_in_a_tree_reports_rejects(tmp_path):
    """The worktree path (git am, then git apply --reject for the .rej hunks) on a tiny repo."""
    repo = _tiny_repo(tmp_path / "repo")
    bad = ki.load_series("bad-sublevel", FIXTURE_PATCHES)
    with pytest.raises(HarnessError) as info:
        kt.apply_series(repo, [bad])
    msg = str(info.value)
    assert "bad-sublevel" in msg and "0001-bump-sublevel-999.patch" in msg
    assert "Makefile.rej" in msg and "-SUBLEVEL = 999" in msg
    with pytest.raises(HarnessError, match="0001-bump-sublevel-999.patch"):
        kt.check_series_applies(repo, [bad])


def test_a_pin_the_archive_does_not_have_is_refused_by_name():
    """apt-get is asked for exactly the pinned version; one it cannot find fails naming the pin."""
    base = ki.load_base()
    missing = ki.BaseInfo(base.package, "0.0.1-1~nonexistent", "0.0.1", base.tarball, base.tarball_dir)
    with pytest.raises(HarnessError, match=r"pinned kernel base linux-source-6\.12=0\.0\.1-1~nonexistent"):
        kt.check_package(missing, Reporter(None))
