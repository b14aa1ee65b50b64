"""No build for patches that build nothing: a ``base+...`` kernel whose last patches (or a ``--tree`` commit
whose commits since a cached build of the same checkout) change no file that the build below them used
(documentation, MAINTAINERS, comments in files this config never compiles) is that kernel.  Its cache entry is published as a copy of the one below, with ``reused_from``
saying which, and why.

"Below" is the nearest cached prefix of the same stack, patch by patch (``base+S@3`` for ``base+S@5`` when
``@4`` is not cached), with the same fragments, compiler and module; what that build used is its
``used-files.json`` (see :mod:`harness.kernels.used`).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from harness.kernels import used
from harness.kernels.cache import INCOMPLETE_MARKER, kernel_cache, load_build, publish
from harness.kernels.inputs import Fragment, PatchFile, Series, compute_key, snapshot_inputs
from harness.kernels.record import KernelRecord
from harness.process import git


@dataclass(frozen=True)
class Below:
    """The cached build a kernel can reuse, and what it has on top of that build."""

    key: str
    info: dict
    changes: list[str]  # the patches (SERIES/FILE) or commits on top of it
    changed: list[str]  # every path they touch (none of them used by that build)

    def describe(self) -> str:
        """One line: what changes which files, and whose build is reused."""
        what = ", ".join(self.changes[:3]) + (f" and {len(self.changes) - 3} more" if len(self.changes) > 3 else "")
        files = ", ".join(self.changed[:4]) + (f" and {len(self.changed) - 4} more" if len(self.changed) > 4 else "")
        return (f"{what} change{'s' if len(self.changes) == 1 else ''} only {files}, which the build of "
                f"{self.info.get('spec')} (key {self.key[:12]}) does not use: reusing that build")


def _stack(flat: list[tuple[Series, PatchFile]]) -> list[Series]:
    out: list[Series] = []
    for s, p in flat:
        if out and out[-1].name == s.name:
            out[-1] = replace(out[-1], patches=out[-1].patches + (p,))
        else:
            out.append(replace(s, patches=(p,)))
    return out


def _prefixes(series: list[Series]) -> Iterator[tuple[list[Series], list[tuple[Series, PatchFile]]]]:
    """(stack, patches on top of it) for each shorter prefix of the stack, nearest first."""
    flat = [(s, p) for s in series for p in s.patches]
    for n in range(len(flat) - 1, -1, -1):
        yield _stack(flat[:n]), flat[n:]


def used_by(key: str, info: dict) -> dict | None:
    """What the cached build `key` used: its used-files.json, or (builds published before there was one) read
    from its worktree when that is still complete; None when nobody can tell."""
    bdir = kernel_cache() / "builds" / key
    found = used.load(bdir)
    if found is not None:
        return found
    tree = kernel_cache() / "trees" / key
    if not (kernel_cache() / "trees" / f"{key}.ready").is_file() or not (tree / ".config").is_file() \
            or (tree / INCOMPLETE_MARKER).exists() or isinstance(info.get("tree"), dict):
        return None
    found = used.collect(tree, tree)
    if info.get("modules_sha256") or info.get("contig_bench_sha256"):
        found["all_headers"] = True  # the modules' own includes were not kept: count every header
    used.save(bdir, found)
    return found


def find_below(base, series: list[Series], frags: list[Fragment], gcc: str, mod_sha: str | None) -> Below | None:
    """The nearest cached build below this stack, if the patches on top of it change nothing it used."""
    for stack, extra in _prefixes(series):
        key = compute_key(base, stack, frags, gcc, mod_sha)
        info = load_build(key)
        if info is None:
            continue
        what = used_by(key, info)
        if what is None:
            return None
        changed: list[str] = []
        for _, p in extra:
            changed += used.patch_paths(p.data)
        if not changed or used.used_paths(what, changed):
            return None
        return Below(key, info, [f"{s.name}/{p.file}" for s, p in extra], sorted(set(changed)))
    return None


def find_below_commit(path: Path, state: dict, frags: list[Fragment], gcc: str, mod_sha: str | None,
                      max_commits: int = 64) -> Below | None:
    """For a clean --tree checkout: the nearest cached build of the same checkout at a first-parent ancestor
    of HEAD, if the commits since change nothing that build used (a bisect over commits steps this way)."""
    if state["dirty"]:
        return None
    revs = _git_lines(path, "rev-list", "--first-parent", f"--max-count={max_commits}", f"{state['head']}^")
    for rev in revs or []:
        key = compute_key({"tree": dict(state, head=rev)}, [], frags, gcc, mod_sha)
        info = load_build(key)
        if info is None:
            continue
        what = used.load(kernel_cache() / "builds" / key)
        changed = _git_lines(path, "diff", "--no-renames", "--name-only", rev, state["head"])
        if what is None or not changed or used.used_paths(what, changed):
            return None
        commits = _git_lines(path, "rev-list", "--abbrev-commit", "--abbrev=12", f"{rev}..{state['head']}") or []
        return Below(key, info, [f"commit {c}" for c in commits], sorted(changed))
    return None


def _git_lines(path: Path, *args: str) -> list[str] | None:
    res = git(path, *args, check=False)
    return res.stdout.split() if res.returncode == 0 else None


def publish_reuse(key: str, spec_text: str, slug: str, below: Below, tmp: Path, t_start: float, *,
                  series: Sequence[Series] = (), frags: Sequence[Fragment] = (), info_updates: dict | None = None,
                  record_updates: dict | None = None) -> dict:
    """Publish builds/<key> as a copy of the build below (staged in the empty tmp); returns its build.json."""
    src = kernel_cache() / "builds" / below.key
    info = copy.deepcopy(below.info)
    for rel in [*info.get("file_sha256", {}), "bzImage", *info.get("extra_files", {}).values(), used.USED_FILE]:
        if (src / rel).is_file() and not (tmp / rel).exists():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp / rel)
    if series:
        (tmp / "series").mkdir()
        snapshot_inputs(tmp, list(series), list(frags), None)
    series_rec = [{"name": s.name, "patches": [{"file": p.file, "sha256": p.sha256} for p in s.patches],
                   "of": s.total} for s in series]
    reused = {"key": below.key, "spec": below.info.get("spec"), "changes": below.changes,
              "changed_files": below.changed}
    (tmp / "build.log").write_text(
        f"# harness kernel build {spec_text} key {key}\n# not built: reuses the build of {reused['spec']} "
        f"(key {below.key})\n# {', '.join(below.changes)} change only files that build did not use:\n"
        + "".join(f"#   {c}\n" for c in below.changed))
    info.update(key=key, spec=spec_text, series=series_rec, reused_from=reused,
                built_at=datetime.now(UTC).isoformat(timespec="seconds"),
                timings={"total_s": round(time.monotonic() - t_start, 2)}, ccache={"hits": 0, "misses": 0},
                **(info_updates or {}))
    info["record"] = KernelRecord.model_validate({
        **info["record"], "spec": spec_text, "slug": slug, "cache_key": key, "series": series_rec,
        "reused_from": below.key, "config": str(kernel_cache() / "builds" / key / "config"),
        **(record_updates or {})}).model_dump(mode="json")
    publish(key, tmp, info)
    return info
