"""Kernel source trees: the pristine base git repo, the per-key worktrees with patch series applied, and the
state of a developer's own checkout (``--tree``).

The base comes from the Debian linux-source package pinned in kernel_patches/base.yaml (installed with apt-get
when missing); see :mod:`harness.kernels.cache` for where the repo and worktrees live.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.kernels.cache import flock, kernel_cache
from harness.kernels.gitops import GIT_DATE, git_in, remove_worktree
from harness.kernels.inputs import BaseInfo, PatchFile, Series, load_base
from harness.kernels.progress import Reporter
from harness.kernels.takeover import adopt_tree
from harness.process import git, run_command, tail


def apt_install(package: str):
    """apt-get install -y `package` (`name` or `name=version`; through sudo -n when not root)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--allow-downgrades", package]
    if os.geteuid() != 0 and shutil.which("sudo"):
        cmd = ["sudo", "-n", *cmd]
    run_command(cmd, env=env, what=f"apt-get install -y {package}")


def _dpkg_version(package: str) -> str | None:
    res = run_command(["dpkg-query", "-W", "-f", "${Status}\t${Version}", package], check=False)
    if res.returncode != 0:
        return None
    status, _, version = res.stdout.partition("\t")
    return version.strip() if status.endswith(" installed") else None


def check_package(base: BaseInfo, rep: Reporter):
    """The pinned base package is installed at its pinned version: apt-get installs exactly that version
    when the tarball is missing or another version is installed."""
    pinned = f"{base.package}={base.version}"
    if not base.tarball.is_file() or _dpkg_version(base.package) != base.version:
        with rep.status(f"installing {pinned} (apt-get)"):
            try:
                apt_install(pinned)
            except HarnessError as exc:
                raise HarnessError(
                    f"cannot install the pinned kernel base {pinned} (kernel_patches/base.yaml): {exc}; "
                    f"if the archive no longer has that version, update base.yaml deliberately"
                ) from None
    installed = _dpkg_version(base.package)
    if not base.tarball.is_file() or installed != base.version:
        raise HarnessError(
            f"base kernel pin mismatch: kernel_patches/base.yaml pins {pinned} with {base.tarball}, "
            f"but dpkg reports {installed or 'not installed'}"
        )


def _makefile_version(makefile: Path) -> str:
    vals = {}
    for line in makefile.read_text(errors="replace").splitlines()[:10]:
        m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\S*)", line)
        if m:
            vals[m.group(1)] = m.group(2)
    return f"{vals.get('VERSION')}.{vals.get('PATCHLEVEL')}.{vals.get('SUBLEVEL')}"


def ensure_base_repo(base: BaseInfo | None = None, progress=None) -> Path:
    """The extracted base as a git repo with tag ``base`` (extract + commit once, ~30 s)."""
    base = base or load_base()
    src = kernel_cache() / "src" / f"linux-{base.kernel_version}"
    if _base_ready(src):
        return src
    with Reporter(progress) as rep, flock("src"):
        if _base_ready(src):
            return src
        check_package(base, rep)
        src.parent.mkdir(parents=True, exist_ok=True)
        tmp = src.parent / f".tmp-{src.name}"
        for d in (tmp, src):
            if d.exists():
                shutil.rmtree(d)
        tmp.mkdir()
        t0 = time.monotonic()
        with rep.status(f"extracting {base.tarball.name} (linux {base.kernel_version})"):
            run_command(["tar", "-xJf", str(base.tarball), "-C", str(tmp), "--strip-components=1",
                  f"{base.tarball_dir}/"], what=f"extracting {base.tarball}")
        found = _makefile_version(tmp / "Makefile")
        if found != base.kernel_version:
            shutil.rmtree(tmp)
            raise HarnessError(
                f"{base.tarball}: Makefile says linux {found}, base.yaml pins {base.kernel_version}")
        env = dict(os.environ, GIT_AUTHOR_DATE=GIT_DATE, GIT_COMMITTER_DATE=GIT_DATE)
        with rep.status(f"committing the base tree to git ({src})"):
            git_in(tmp, "init", "-q")
            git_in(tmp, "config", "core.autocrlf", "false")
            git_in(tmp, "config", "gc.auto", "0")
            git_in(tmp, "add", "-A", "-f", ".")
            git_in(tmp, "commit", "-q", "--no-verify", "-m",
                   f"{base.package} {base.version} (linux {base.kernel_version})", env=env)
            git_in(tmp, "tag", "base")
        tmp.rename(src)
        rep.log(f"base linux {base.kernel_version} extracted in {time.monotonic() - t0:.0f} s: {src}")
    return src


def _base_ready(src: Path) -> bool:
    if not (src / ".git").is_dir() or not (src / "Makefile").is_file():
        return False
    return git_in(src, "rev-parse", "-q", "--verify", "refs/tags/base", check=False).returncode == 0


def prepare_tree(src: Path, key: str, series: list[Series], rep: Reporter, snapshot: Path | None = None,
                 config: str | None = None) -> Path:
    """trees/<key>: a worktree of the base with the series applied (reused if complete, else recreated).

    config: the key's config fragment digest, to recreate it from a worktree whose objects have that config."""
    trees = kernel_cache() / "trees"
    trees.mkdir(exist_ok=True)
    tree = trees / key
    ready = trees / f"{key}.ready"
    if tree.exists() and ready.is_file():
        head = git_in(tree, "rev-parse", "HEAD", check=False).stdout.strip()
        dirty = git_in(tree, "status", "--porcelain", "--untracked-files=no", check=False)
        if head and head == ready.read_text().strip() and dirty.returncode == 0 and not dirty.stdout.strip():
            return tree
    ready.unlink(missing_ok=True)
    check_series_applies(src, series, rep, snapshot)  # fail fast, before checking out a 1.5 GB worktree
    applied = adopt_tree(src, trees, key, series, rep, config)
    if applied is None:
        applied = 0
        with flock("src"):
            with rep.status(f"creating worktree trees/{key[:12]}"):
                remove_worktree(src, tree)
                git_in(src, "worktree", "add", "-q", "--detach", str(tree), "base",
                       what=f"git worktree add {tree}")
    try:
        apply_series(tree, series, rep, snapshot, skip=applied)
    except BaseException:
        with flock("src"):
            remove_worktree(src, tree)
        raise
    ready.write_text(git_in(tree, "rev-parse", "HEAD").stdout.strip() + "\n")
    return tree


def check_series_applies(src: Path, series: list[Series], rep: Reporter | None = None,
                         snapshot: Path | None = None):
    """Apply the series in order to a scratch index of the base (no checkout); raise naming the first misfit.

    Uses the same `git apply` machinery `git am` uses, so a series that passes here applies in the worktree.
    """
    if not series:
        return
    rep = rep or Reporter(quiet=True)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kb-index-") as td, rep.status("checking that the series apply"):
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(td) / "index"))
        git_in(src, "read-tree", "base", env=env, what="git read-tree base")
        for s in series:
            for i, p in enumerate(s.patches, 1):
                ppath = snapshot / s.name / p.file if snapshot is not None else p.path
                res = git_in(src, "apply", "--cached", "--verbose", str(ppath), check=False, env=env)
                if res.returncode != 0:
                    out = "\n".join(line for line in (res.stdout + res.stderr).splitlines()
                                    if not line.startswith("Checking patch"))
                    raise HarnessError(
                        f"patch series {s.name!r}: patch {i}/{len(s.patches)} {p.file} ({p.path}) does not apply"
                        f" to the base{' after the series before it' if series.index(s) else ''}:\n"
                        f"{tail(out.strip(), 40)}")


def apply_series(tree: Path, series: list[Series], rep: Reporter | None = None, snapshot: Path | None = None,
                 skip: int = 0):
    """`git am` each patch of each series in order; a patch that does not apply raises HarnessError.

    snapshot: a directory with <series>/<patch file> copies to apply instead of the originals.  skip: how many
    leading patches (over all series) the tree has applied already.
    """
    rep = rep or Reporter(quiet=True)
    env = dict(os.environ, GIT_COMMITTER_DATE=GIT_DATE)
    for s in series:
        first = min(skip, len(s.patches))
        skip -= first
        if first == len(s.patches):
            continue
        with rep.status(f"applying series {s.name} ({len(s.patches) - first} patches)"):
            for i, p in enumerate(s.patches[first:], first + 1):
                ppath = snapshot / s.name / p.file if snapshot is not None else p.path
                res = git_in(tree, "am", "--no-3way", "--keep-cr", str(ppath), check=False, env=env)
                if res.returncode != 0:
                    raise HarnessError(_patch_failure(tree, s, i, p, ppath, res.stdout + res.stderr))


def _patch_failure(tree: Path, s: Series, index: int, p: PatchFile, ppath: Path, am_out: str) -> str:
    git_in(tree, "am", "--abort", check=False)
    rej = git(tree, "apply", "--reject", "--verbose", str(ppath), check=False)
    rej_texts = []
    for r in sorted(tree.rglob("*.rej")):
        rel = r.relative_to(tree)
        rej_texts.append(f"--- {rel}\n{tail(r.read_text(errors='replace'), 40)}")
    msg = [f"patch series {s.name!r}: patch {index}/{len(s.patches)} {p.file} ({p.path}) does not apply:",
           tail(am_out.strip(), 15)]
    applied_out = "\n".join(line for line in (rej.stdout + rej.stderr).splitlines()
                            if line.startswith(("error", "Rejected", "Checking", "Applying", "Applied")))
    if applied_out:
        msg += ["git apply --reject:", tail(applied_out, 20)]
    if rej_texts:
        msg += ["rejected hunks:", *rej_texts]
    return "\n".join(msg)


def tree_state(path: Path) -> dict:
    """What decides a --tree build's sources: HEAD, the diff against HEAD, untracked (non-ignored) files."""
    if git(path, "rev-parse", "--git-dir", check=False).returncode != 0:
        raise InputError(f"--tree {path}: not a git checkout (the cache key needs git rev-parse HEAD / git diff)")
    head = git(path, "rev-parse", "HEAD", what="git rev-parse HEAD").stdout.strip()
    diff = git(path, "diff", "--binary", "HEAD", binary=True, check=False).stdout
    untracked = git(path, "ls-files", "-z", "--others", "--exclude-standard",
                            binary=True, check=False).stdout.split(b"\0")
    h = hashlib.sha256()
    names = sorted(u for u in untracked if u)
    for u in names:
        p = path / u.decode(errors="surrogateescape")
        h.update(u + b"\0")
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return {"path": str(path), "head": head, "diff_sha256": hashlib.sha256(diff).hexdigest(),
            "untracked_sha256": h.hexdigest(), "untracked_files": len(names), "dirty": bool(diff or names)}


def committed_state(path: Path, rev: str) -> dict:
    """tree_state() of the checkout as it would be with `rev` checked out and nothing else changed."""
    if git(path, "rev-parse", "--git-dir", check=False).returncode != 0:
        raise InputError(f"--tree {path}: not a git checkout (the cache key needs git rev-parse HEAD / git diff)")
    res = git(path, "rev-parse", "--verify", f"{rev}^{{commit}}", check=False)
    if res.returncode != 0:
        raise InputError(f"--tree {path}: no commit {rev!r}")
    return {"path": str(path), "head": res.stdout.strip(), "diff_sha256": hashlib.sha256(b"").hexdigest(),
            "untracked_sha256": hashlib.sha256().hexdigest(), "untracked_files": 0, "dirty": False}


def user_checkout(path: Path) -> tuple[Path, str]:
    """(the cache's in-tree build copy of a developer's checkout, the name of its lock)."""
    name = f"user-{re.sub(r'[^A-Za-z0-9._-]', '_', path.name)}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    return kernel_cache() / "trees" / name, name


def sync_user_tree(path: Path, state: dict, rep: Reporter | None = None, local_changes: bool = True) -> Path:
    """The cache's copy of the developer's checkout `path`, holding exactly the sources `state` describes.

    A ``git clone --shared`` (objects borrowed from the checkout, nothing copied) at HEAD, with the
    checkout's uncommitted diff and untracked files on top.  Builds happen in it, in-tree, like the series
    worktrees: the compiler sees the same relative paths, so ccache hits what series builds compiled, and
    the developer's checkout is never written to.  Reused across commits (make rebuilds what a checkout
    changed); the caller holds its lock (:func:`user_checkout`).  local_changes=False: the commit alone (a
    bisect step), without the checkout's uncommitted diff and untracked files.
    """
    rep = rep or Reporter(quiet=True)
    co, _ = user_checkout(path)
    if not (co / ".git").is_dir():
        tmp = co.with_name(f".tmp-{co.name}")
        for d in (tmp, co):
            shutil.rmtree(d, ignore_errors=True)
        co.parent.mkdir(parents=True, exist_ok=True)
        git(None, "clone", "--quiet", "--shared", "--no-checkout", str(path), str(tmp),
                    what=f"git clone --shared {path}")
        tmp.rename(co)
    (co / ".git" / "index.lock").unlink(missing_ok=True)  # left by a git killed half-way; we hold co's lock
    with rep.status(f"checking out {state['head'][:12]} of {path} into {co.name}"):
        git_in(co, "checkout", "--quiet", "--force", "--detach", state["head"], what=f"git checkout {state['head']}")
        git_in(co, "clean", "-fdq", what="git clean")  # untracked sources of an earlier sync, not build outputs
        diff = git(path, "diff", "--binary", "HEAD", binary=True).stdout \
            if local_changes else b""
        if diff:
            git(co, "apply", "--index", "--binary", "--whitespace=nowarn", "-", input=diff,
                        binary=True, what=f"applying the uncommitted changes of {path}")
        untracked = git(path, "ls-files", "-z", "--others", "--exclude-standard",
                                binary=True).stdout.split(b"\0") if local_changes else []
        for u in (u.decode(errors="surrogateescape") for u in untracked if u):
            (co / u).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path / u, co / u)
    now = git(co, "diff", "--binary", "HEAD", binary=True).stdout
    if hashlib.sha256(now).hexdigest() != state["diff_sha256"]:
        raise HarnessError(f"--tree {path}: its copy in {co} does not match it after the sync "
                           f"(did the checkout change during the build?)")
    return co
