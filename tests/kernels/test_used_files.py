"""Which files a build used (from its .cmd files), and patches that change none of them reusing the build below."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.kernels import build as kb
from harness.kernels import cache as kcache
from harness.kernels import inputs as ki
from harness.kernels import reuse, used
from harness.kernels.spec import parse_kernel_spec

FIXTURE_PATCHES = Path(__file__).parent.parent / "data" / "kernel_build" / "patches"

CMD = """savedcmd_mm/page_alloc.o := ccache gcc -Wp,-MMD,mm/.page_alloc.o.d -nostdinc -I./arch/x86/include \
-include ./include/linux/kconfig.h -c -o mm/page_alloc.o mm/page_alloc.c

source_mm/page_alloc.o := mm/page_alloc.c

deps_mm/page_alloc.o := \\
  include/linux/kconfig.h \\
    $(wildcard include/config/CPU_BIG_ENDIAN) \\
  include/linux/mm.h \\
  /usr/lib/gcc/x86_64-linux-gnu/12/include/stddef.h \\
  include/generated/autoconf.h

mm/page_alloc.o: $(deps_mm/page_alloc.o)

$(deps_mm/page_alloc.o):
"""
TBL_CMD = ("savedcmd_arch/x86/include/generated/asm/syscalls_64.h := sh ./scripts/syscallhdr.sh --abis common,64 "
           "arch/x86/entry/syscalls/syscall_64.tbl arch/x86/include/generated/asm/syscalls_64.h\n")
KCONFIG_CMD = "autoconfig := include/config/auto.conf\n\ndeps_config := \\\n\tKconfig \\\n\tmm/Kconfig\n"


def write(root: Path, rel: str, text: str = "x\n") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


@pytest.fixture
def tree(tmp_path):
    for rel in ("mm/page_alloc.c", "mm/hugetlb.c", "mm/Makefile", "mm/Kconfig", "Kconfig", "Makefile",
                "include/linux/kconfig.h", "include/linux/mm.h", "include/linux/unused.h", "scripts/syscallhdr.sh",
                "arch/x86/entry/syscalls/syscall_64.tbl", "arch/arm64/Makefile", "arch/arm64/mm/init.c",
                "Documentation/mm/x.rst", "MAINTAINERS", "mm/README"):
        write(tmp_path, rel)
    write(tmp_path, "mm/.page_alloc.o.cmd", CMD)
    write(tmp_path, "arch/x86/include/generated/asm/.syscalls_64.h.cmd", TBL_CMD)
    write(tmp_path, "include/config/auto.conf.cmd", KCONFIG_CMD)
    write(tmp_path, ".config", "CONFIG_MMU=y\n")
    return tmp_path


def test_collect_reads_sources_deps_commands_and_kconfig(tree):
    found = used.collect(tree, tree)
    assert set(found["files"]) == {"mm/page_alloc.c", "include/linux/kconfig.h", "include/linux/mm.h",
                                   "scripts/syscallhdr.sh", "arch/x86/entry/syscalls/syscall_64.tbl",
                                   "Kconfig", "mm/Kconfig"}
    assert set(found["dirs"]) == {"mm", "arch/x86/include/generated/asm"}
    assert found["all_headers"] is False


def test_used_paths_decides_from_the_build(tree):
    found = used.collect(tree, tree)
    changed = ["mm/page_alloc.c", "include/linux/mm.h", "mm/Kconfig", "mm/Makefile", "Makefile",
               "arch/x86/entry/syscalls/syscall_64.tbl", "scripts/syscallhdr.sh", "tools/objtool/check.c",
               "localversion-test", "mm/README",  # a non-source file in a directory the build ran in: counts
               # not used: never compiled, never included, never descended into, or not part of a build at all
               "mm/hugetlb.c", "include/linux/unused.h", "arch/arm64/Makefile", "arch/arm64/mm/init.c",
               "Documentation/mm/x.rst", "MAINTAINERS", "arch/arm64/Kconfig"]
    assert used.used_paths(found, changed) == changed[:10]
    assert used.used_paths(dict(found, all_headers=True), ["include/linux/unused.h"]) == ["include/linux/unused.h"]


def test_collect_follows_an_external_module_build(tree, tmp_path):
    mod = tmp_path / "mod"
    write(mod, ".contig_bench.o.cmd", "deps_x := \\\n  include/linux/unused.h \\\n  /elsewhere/contig_bench.c\n")
    assert "include/linux/unused.h" in used.collect(tree, tree, [mod])["files"]


def test_patch_paths_names_new_deleted_and_renamed_files():
    patch = b"""diff --git a/a/old.c b/a/new.c
similarity index 90%
rename from a/old.c
rename to a/new.c
--- a/a/old.c
+++ b/a/new.c
@@ -1 +1 @@
-x
+y
diff --git a/gone.h b/gone.h
deleted file mode 100644
--- a/gone.h
+++ /dev/null
@@ -1 +0,0 @@
-x
diff --git a/added.txt b/added.txt
new file mode 100644
--- /dev/null
+++ b/added.txt
@@ -0,0 +1 @@
+x
"""
    assert sorted(used.patch_paths(patch)) == ["a/new.c", "a/old.c", "added.txt", "gone.h"]
    docs = ki.load_series("docs-only", FIXTURE_PATCHES)
    assert [used.patch_paths(p.data) for p in docs.patches] == [
        ["Documentation/mm/free_page_reporting.rst", "arch/arm64/mm/init.c"], ["MAINTAINERS"]]


# ---- with the real base build (cached by the suite's base build; builds it when missing)


@pytest.mark.kernelbuild
def test_the_base_build_used_what_an_x86_guest_compiles():
    base = kb.build_kernel(parse_kernel_spec("base"))
    key = base.record.cache_key
    found = reuse.used_by(key, kcache.load_build(key))
    assert found is not None
    assert used.used_paths(found, [
        "mm/page_alloc.c", "mm/page_reporting.c", "include/linux/mm.h", "mm/Kconfig", "mm/Makefile",
        "arch/x86/entry/syscalls/syscall_64.tbl", "drivers/virtio/virtio_balloon.c", "MAINTAINERS",
        "Documentation/mm/free_page_reporting.rst", "arch/arm64/mm/init.c", "arch/arm64/Makefile",
        "drivers/gpu/drm/drm_drv.c"]) == [
        "mm/page_alloc.c", "mm/page_reporting.c", "include/linux/mm.h", "mm/Kconfig", "mm/Makefile",
        "arch/x86/entry/syscalls/syscall_64.tbl", "drivers/virtio/virtio_balloon.c"]


@pytest.mark.kernelbuild
def test_patches_that_change_no_used_file_reuse_the_build_below(capsys):
    """base+docs-only (Documentation/, MAINTAINERS, a comment in arch/arm64) is not built: it is base's build,
    and says so; a comment in a compiled file (trivial-comment) is not reused."""
    base = kb.build_kernel(parse_kernel_spec("base"))
    key = kb.build_key(parse_kernel_spec("base+docs-only"), patches_root=FIXTURE_PATCHES)
    bdir = kcache.kernel_cache() / "builds" / key
    shutil.rmtree(bdir, ignore_errors=True)
    try:
        kernel = kb.build_kernel(parse_kernel_spec("base+docs-only"), patches_root=FIXTURE_PATCHES)
        err = capsys.readouterr().err
        assert "not built" in err and "MAINTAINERS" in err and "reusing that build" in err
        info = json.loads((bdir / "build.json").read_text())
        assert info["reused_from"]["key"] == base.record.cache_key
        assert info["reused_from"]["changed_files"] == ["Documentation/mm/free_page_reporting.rst", "MAINTAINERS",
                                                         "arch/arm64/mm/init.c"]
        assert kernel.record.sha256 == base.record.sha256 and kernel.record.reused_from == info["reused_from"]["key"]
        assert kernel.bzimage.read_bytes() == base.bzimage.read_bytes()
        assert kernel.record.series[0].name == "docs-only" and kernel.record.cache_key == key
        assert (bdir / "series" / "docs-only" / "series").is_file()
    finally:
        shutil.rmtree(bdir, ignore_errors=True)
    base_inputs = kb._inputs(parse_kernel_spec("base+trivial-comment"), None, FIXTURE_PATCHES)
    assert reuse.find_below(base_inputs.base, base_inputs.series, base_inputs.frags, base_inputs.gcc,
                            base_inputs.mod_sha) is None


def test_a_tree_commit_that_changes_no_used_file_finds_the_build_below(tmp_path, monkeypatch):
    """--tree: the nearest cached build at a first-parent ancestor, and the files changed since."""
    import subprocess

    from harness.kernels import gitops
    from harness.kernels import tree as kt

    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "linux"
    repo.mkdir()

    def git(*a):
        return subprocess.run(["git", *gitops.GIT_IDENTITY, "-C", str(repo), *a], check=True, capture_output=True,
                              text=True).stdout.strip()

    write(repo, "mm/a.c", "int a;\n")
    write(repo, "Documentation/a.rst", "a\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c0")
    frags, gcc = ki.load_fragments(), "gcc"
    state0 = kt.tree_state(repo)
    key0 = ki.compute_key({"tree": state0}, [], frags, gcc, None)
    tmp = kcache.kernel_cache() / "builds" / f".tmp-{key0}"
    tmp.mkdir(parents=True)
    (tmp / "bzImage").write_bytes(b"image")
    used.save(tmp, {"files": ["mm/a.c"], "dirs": ["mm"], "all_headers": False})
    kcache.publish(key0, tmp, {"key": key0, "spec": "tree", "bzimage_sha256": kcache.file_sha256(tmp / "bzImage")})
    write(repo, "Documentation/a.rst", "b\n")
    git("commit", "-qam", "c1: docs")
    write(repo, "MAINTAINERS", "x\n")
    git("add", "-A")
    git("commit", "-qm", "c2: maintainers")
    below = reuse.find_below_commit(repo, kt.tree_state(repo), frags, gcc, None)
    assert below is not None and below.key == key0 and below.changed == ["Documentation/a.rst", "MAINTAINERS"]
    assert len(below.changes) == 2 and below.changes[0].startswith("commit ") and "MAINTAINERS" in below.describe()
    write(repo, "mm/a.c", "int b;\n")
    git("commit", "-qam", "c3: code")
    assert reuse.find_below_commit(repo, kt.tree_state(repo), frags, gcc, None) is None
    write(repo, "Documentation/a.rst", "dirty\n")  # an uncommitted change: never reused
    assert reuse.find_below_commit(repo, kt.tree_state(repo), frags, gcc, None) is None
