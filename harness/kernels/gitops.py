"""git as the kernel builds run it: a fixed identity and date (commits are the same on every machine), and the
removal of a worktree that a killed git may have left locked."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.process import git

GIT_IDENTITY = ["-c", "user.name=testbed", "-c", "user.email=testbed@localhost", "-c", "gc.auto=0"]
GIT_DATE = "2026-01-01T00:00:00+00:00"


def git_in(repo: Path, *args: str, check: bool = True, what: str | None = None, env=None):
    return git(repo, *GIT_IDENTITY, *args, check=check, what=what or f"git {' '.join(args[:3])}", env=env)


def remove_worktree(src: Path, tree: Path):
    git_in(src, "worktree", "unlock", str(tree), check=False)  # a `worktree add` killed half-way leaves it locked
    if tree.exists():
        git_in(src, "worktree", "remove", "--force", "--force", str(tree), check=False)
        if tree.exists():
            shutil.rmtree(tree)
    git_in(src, "worktree", "prune", check=False)
