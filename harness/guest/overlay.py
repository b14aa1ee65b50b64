"""A scenario's own files in the guest image: host files or directories, checked before anything boots.

The guest has no libc, so an ELF executable must be statically linked (static-pie is fine); a dynamically
linked one is refused naming it.  Directories are added recursively under their destination.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import InputError
from harness.process import run_command

ELF_MAGIC = b"\x7fELF"
DEFAULT_DEST_DIR = "/usr/local/bin"


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


def dynamic_link_problem(path: Path) -> str | None:
    """Why `path` cannot run in the guest (dynamically linked ELF), or None."""
    if not _is_elf(path):
        return None
    kind = run_command(["file", "-b", path]).stdout
    if "dynamically linked" in kind:
        return "is dynamically linked and the guest has no libc: link it with -static"
    return None


def overlay_files(src: Path, dest: str, where: str) -> dict[str, Path]:
    """Guest path -> host file for one entry; InputError (naming `where` and the file) on a bad one."""
    if not dest.startswith("/"):
        raise InputError(f"{where}: dest {dest!r} must be an absolute guest path")
    if not src.exists():
        raise InputError(f"{where}: {src}: no such file or directory")
    if src.is_dir():
        files = {f"{dest.rstrip('/')}/{p.relative_to(src)}": p for p in sorted(src.rglob("*")) if p.is_file()}
    elif src.is_file():
        files = {dest: src}
    else:
        raise InputError(f"{where}: {src}: not a regular file or directory")
    for host in files.values():
        why = dynamic_link_problem(host)
        if why:
            raise InputError(f"{where}: {host} {why}")
    return files
