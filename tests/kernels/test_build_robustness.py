"""A kernel build killed half-way, two builds of one spec at once, and a cached image damaged after its build.

The fast tests check the pieces (the sha256 check of a cache entry, the per-key lock and its hand-over to make's
children); the kernelbuild test does it for real on a spec no cache holds yet (one comment line of
mm/page_alloc.c with a token unique to the run: every object is a ccache hit, about 1-2 min a build here).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness.kernels import build as kb
from harness.kernels import cache as kcache
from harness.kernels import gitops
from harness.kernels import inputs as ki
from harness.kernels import tree as kt
from harness.kernels.spec import check_kernel_image, parse_kernel_spec

FIXTURE_PATCHES = Path(__file__).parent.parent / "data" / "kernel_build" / "patches"


def fake_build(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A published cache entry for `base` under a temporary cache (no kernel in it: bytes with their sha256)."""
    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path / "cache"))
    key = kb.build_key(parse_kernel_spec("base"))
    tmp = kcache.kernel_cache() / "builds" / f".tmp-{key}"
    (tmp / "modules").mkdir(parents=True)
    (tmp / "bzImage").write_bytes(b"an image" * 1000)
    (tmp / "modules" / "contig_bench.ko").write_bytes(b"ko")
    files = kcache.published_digests(tmp, ["bzImage", "modules/contig_bench.ko"])
    kcache.publish(key, tmp, {
        "key": key, "spec": "base", "kernelrelease": "6.12.117+", "bzimage_sha256": files["bzImage"],
        "file_sha256": files, "extra_files": {kb.CONTIG_BENCH_GUEST_PATH: "modules/contig_bench.ko"},
        "record": {"spec": "base", "slug": "base", "cache_key": key, "sha256": files["bzImage"]}})
    return key, kcache.kernel_cache() / "builds" / key


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete-module", "alter-module"])
def test_a_damaged_cache_entry_is_never_served(tmp_path, monkeypatch, capsys, damage):
    key, bdir = fake_build(tmp_path, monkeypatch)
    assert kcache.check_build(key)[0] is not None
    image, ko = bdir / "bzImage", bdir / "modules" / "contig_bench.ko"
    if damage == "truncate":
        image.write_bytes(image.read_bytes()[:100])
    elif damage == "flip":  # same size, one byte altered
        data = bytearray(image.read_bytes())
        data[4000] ^= 1
        image.write_bytes(bytes(data))
    elif damage == "delete-module":
        ko.unlink()
    else:
        ko.write_bytes(b"kx")
    info, problem = kcache.check_build(key)
    assert info is None and problem
    assert ("missing" if damage == "delete-module" else "is not the file that was built") in problem
    assert kcache.load_build(key) is None and not kb.is_built(parse_kernel_spec("base"))
    assert [i["key"] for i in kcache.list_cached()] == []
    assert [k for k, _ in kcache.damaged_builds()] == [key]

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(kb, "ensure_ccache", stop)  # where the rebuild would begin
    with pytest.raises(Stop):
        kb.build_kernel(parse_kernel_spec("base"))
    err = capsys.readouterr().err
    assert re.search(r"the cached build of base \(key \w{12}\) is damaged: .*; building it again", err), err
    assert len([line for line in err.splitlines() if "damaged" in line]) == 1


def test_publish_replaces_an_entry_whole(tmp_path, monkeypatch):
    key, bdir = fake_build(tmp_path, monkeypatch)
    tmp = bdir.parent / f".tmp-{key}"
    tmp.mkdir()
    (tmp / "bzImage").write_bytes(b"new")
    kcache.publish(key, tmp, {"key": key, "bzimage_sha256": hashlib.sha256(b"new").hexdigest()})
    assert (bdir / "bzImage").read_bytes() == b"new" and not (bdir / "modules").exists()
    assert sorted(p.name for p in bdir.parent.iterdir()) == [key]


def test_the_key_lock_waits_and_outlives_a_killed_holder_while_its_children_run(tmp_path, monkeypatch):
    """flock(key) says when it has to wait; make inherits the lock, so killing the harness does not free it
    while a compiler it started still runs."""
    monkeypatch.setenv("BALLOON_TESTBED_CACHE", str(tmp_path / "cache"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from harness.kernels.cache import flock\n"
        "with flock('k') as fh:\n"
        "    subprocess.Popen(['sleep', '3'], pass_fds=(fh.fileno(),))\n"  # make's stand-in, started holding it
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True, env=os.environ)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)  # the harness dies; its child still holds the lock
    holder.wait()
    t0 = time.monotonic()
    waited = []
    with kcache.flock("k", waiting=lambda: waited.append(time.monotonic() - t0)):
        held_for = time.monotonic() - t0
    assert waited and held_for > 1.0, "the lock was free while the killed harness's child still ran"
    with kcache.flock("k", waiting=lambda: pytest.fail("a free lock made us wait")) as fh:
        with pytest.raises(BlockingIOError):  # held: another open file cannot take it
            fcntl.flock(open(fh.name), fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---- the real thing


def _unique_spec(root: Path) -> str:
    """base+<series> of one comment line in mm/page_alloc.c that no cache holds (a token unique to this run)."""
    (src,) = (FIXTURE_PATCHES / "trivial-comment").glob("*.patch")
    d = root / "unique-comment"
    d.mkdir(parents=True)
    text = src.read_text().replace("(balloon testbed trivial patch)", f"(testbed {uuid.uuid4().hex[:12]})")
    (d / src.name).write_text(text)
    (d / "series").write_text(src.name + "\n")
    return "base+unique-comment"


def _start(spec: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "kernel", "build", spec], env=env,
                            stdout=open(log.with_suffix(".out"), "w"), stderr=open(log, "w"),
                            start_new_session=True)


def _forget(key: str) -> None:
    shutil.rmtree(kcache.kernel_cache() / "builds" / key, ignore_errors=True)
    shutil.rmtree(kcache.kernel_cache() / "failed" / key, ignore_errors=True)
    trees = kcache.kernel_cache() / "trees"
    (trees / f"{key}.ready").unlink(missing_ok=True)
    gitops.remove_worktree(kt.ensure_base_repo(), trees / key)


@pytest.mark.kernelbuild
@pytest.mark.kernels
@pytest.mark.vm
def test_killed_half_way_then_built_twice_at_once_then_damaged(tmp_path, monkeypatch):
    base = kb.build_kernel(parse_kernel_spec("base"))  # the base worktree, ccache and src repo (cached: instant)
    root = tmp_path / "patches"
    spec = _unique_spec(root)
    key = kb.build_key(parse_kernel_spec(spec), patches_root=root)
    env = dict(os.environ, **{ki.PATCHES_ENV: str(root)})
    staging_log = kcache.kernel_cache() / "builds" / f".tmp-{key}" / "build.log"
    tree = kcache.kernel_cache() / "trees" / key
    try:
        # 1. SIGKILL to the harness alone, half-way through compiling: its make and compilers are orphaned
        first = _start(spec, env, tmp_path / "first.err")
        deadline = time.monotonic() + 900
        while not (staging_log.is_file() and staging_log.read_text(errors="replace").count("\n  CC ") >= 400):
            assert first.poll() is None, (tmp_path / "first.err").read_text()
            assert time.monotonic() < deadline, "the first build never got 400 objects far"
            time.sleep(1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert kcache.load_build(key) is None and kcache.check_build(key) == (None, None)
        assert (tree / kcache.INCOMPLETE_MARKER).is_file()

        # 2. two builds of the spec at once: one cleans the killed tree and builds, the other waits and reuses it
        a, b = (_start(spec, env, tmp_path / f"{n}.err") for n in ("a", "b"))
        assert a.wait(timeout=900) == 0 and b.wait(timeout=900) == 0
        errs = [(tmp_path / f"{n}.err").read_text() for n in ("a", "b")]
        outs = [(tmp_path / f"{n}.out").read_text().split() for n in ("a", "b")]
        bdir = kcache.kernel_cache() / "builds" / key
        assert outs[0][-1] == outs[1][-1] == str(bdir / "bzImage")
        built = [e for e in errs if re.search(rf"^built {re.escape(spec)} ", e, re.MULTILINE)]
        assert len(built) == 1, errs
        assert "did not finish" in built[0] and "make mrproper" in built[0]
        other = errs[1 - errs.index(built[0])]
        assert "another process is building" in other and "built meanwhile by another process" in other, other
        assert not (tree / kcache.INCOMPLETE_MARKER).exists()
        log = (bdir / "build.log").read_text()
        assert len(re.findall(r"^\$ .* mrproper\)$", log, re.MULTILINE)) == 1
        assert len(re.findall(r"^\$ .* bzImage\)$", log, re.MULTILINE)) == 1
        info = json.loads((bdir / "build.json").read_text())
        image = bdir / "bzImage"
        sha = hashlib.sha256(image.read_bytes()).hexdigest()
        assert info["file_sha256"]["bzImage"] == sha == info["record"]["sha256"]
        check_kernel_image(image)
        print(f"a comment-only change of mm/page_alloc.c gives base's very image: {sha == base.record.sha256}")
        assert info["kernelrelease"].startswith("6.12.117")

        # what is served boots, and is the kernel the build says
        scenario = tmp_path / "boot.yaml"
        scenario.write_text(yaml.safe_dump({"name": "boot", "guest": {"memory": "512M", "cpus": 1},
                                            "kernels": [spec], "steps": [{"memtouch": "16M", "phase": "touch"}],
                                            "expect": {"nonzero_pages": 0}}))
        monkeypatch.setenv(ki.PATCHES_ENV, str(root))
        from harness.results.scenario_run import run_scenario

        outcome = run_scenario(scenario, results_dir=tmp_path / "results")
        assert outcome.ok, outcome.error
        (kernel,) = json.loads((outcome.bundle / "manifest.json").read_text())["kernels"]
        assert kernel["sha256"] == sha and kernel["guest_release"] == info["kernelrelease"]

        # 3. the image truncated after its build: detected, said in one line, rebuilt to the same bytes
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
        fixer = _start(spec, env, tmp_path / "fix.err")
        assert fixer.wait(timeout=900) == 0
        err = (tmp_path / "fix.err").read_text()
        assert len(re.findall(r"is damaged: bzImage is not the file that was built .*; building it again", err)) == 1
        again = kcache.load_build(key)
        assert again is not None and hashlib.sha256(image.read_bytes()).hexdigest() == again["file_sha256"]["bzImage"]
        print(f"rebuilt image identical to the one before the damage: {again['file_sha256']['bzImage'] == sha}")
    finally:
        if "first" in locals():
            try:
                os.killpg(first.pid, signal.SIGKILL)  # any compiler of the killed build still running
            except ProcessLookupError:
                pass
        for p in (tmp_path / "first.err", tmp_path / "a.err", tmp_path / "b.err", tmp_path / "fix.err"):
            if p.is_file():
                print(f"== {p.name}\n{p.read_text()[-3000:]}")
        _forget(key)


@pytest.mark.kernelbuild
@pytest.mark.kernels
def test_a_tree_build_hits_the_series_ccache_and_skips_commits_that_build_nothing(tmp_path, capsys):
    """--tree of a checkout holding the base's sources compiles nothing ccache does not already hold from the
    base build, and a commit on top that changes only Documentation/ and MAINTAINERS is not built at all."""
    kb.build_kernel(parse_kernel_spec("base"))
    src = kt.ensure_base_repo()
    linux = tmp_path / "linux"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(src), str(linux)], check=True)
    subprocess.run(["git", *gitops.GIT_IDENTITY, "-C", str(linux), "am", "--quiet",
                    *sorted(str(p) for p in (FIXTURE_PATCHES / "docs-only").glob("*.patch"))], check=True)
    heads = subprocess.run(["git", "-C", str(linux), "rev-list", "--first-parent", "HEAD~2..HEAD"],
                           capture_output=True, text=True, check=True).stdout.split()
    keys = []
    try:
        first = kb.build_kernel(None, tree=linux, tree_rev="HEAD~2")  # as a bisect step builds a commit
        keys.append(first.record.cache_key)
        info = json.loads((first.bzimage.parent / "build.json").read_text())
        print(f"first tree build: {info['timings']['total_s']} s, ccache {info['ccache']}")
        # before: an out-of-tree build of the same sources missed every object (absolute paths in its commands)
        assert info["ccache"]["hits"] > 1000 and info["ccache"]["misses"] <= 0.05 * info["ccache"]["hits"], info["ccache"]
        assert first.record.sha256 == kb.build_kernel(parse_kernel_spec("base")).record.sha256
        for head in reversed(heads):  # the documentation commit checked out, then the MAINTAINERS one by rev
            capsys.readouterr()
            if head == heads[-1]:
                subprocess.run(["git", "-C", str(linux), "checkout", "--quiet", "--detach", head], check=True)
                kernel = kb.build_kernel(None, tree=linux)
            else:
                kernel = kb.build_kernel(None, tree=linux, tree_rev=head)
            keys.append(kernel.record.cache_key)
            assert "not built" in capsys.readouterr().err
            assert kernel.record.reused_from in keys[:-1] and kernel.record.sha256 == first.record.sha256
            assert kernel.record.base["head"] == head
    finally:
        co, _ = kt.user_checkout(linux)
        shutil.rmtree(co, ignore_errors=True)
        for key in keys:
            shutil.rmtree(kcache.kernel_cache() / "builds" / key, ignore_errors=True)
