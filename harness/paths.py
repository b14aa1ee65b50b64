"""Where the harness keeps state outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """Per-user cache: built kernels, ccache, stock kernels, images, SSH key, accelerator probe.

    Overridable with BALLOON_TESTBED_CACHE.
    """
    root = Path(os.environ.get("BALLOON_TESTBED_CACHE") or Path.home() / ".cache" / "balloon-testbed")
    root.mkdir(parents=True, exist_ok=True)
    return root


def private_dir(path: Path) -> Path:
    """Create (or tighten) a directory only the current user can enter."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
