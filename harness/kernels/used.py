"""Which source files a finished build used, read from the build itself, and whether a patch changes any.

After every build, :func:`collect` reads the object tree kbuild left: each ``.*.cmd`` file names the source
it compiled (``source_``), every file the compiler read (``deps_``, from gcc -MD) and the command line
(``savedcmd_``: the scripts and tables it ran on); ``include/config/auto.conf.cmd`` lists every Kconfig file
read.  The directories that hold ``.cmd`` files are the ones the build descended into.  Together that is
``builds/<key>/used-files.json``.

:func:`used_paths` then decides, for the paths a patch touches, which of them that build used:

* a path the build read (any of the above) is used;
* scripts/ and tools/ (the build's own programs), and ``localversion*`` files are always used;
* a Makefile or Kbuild file is used when its directory is, or contains, one the build descended into;
* another file in a directory the build descended into is used, unless it is a C/assembler source or
  header: those the compiler would have listed had it read them (a data file read by a make rule, such
  as a syscall table, may not be listed, so it counts);
* anything else (Documentation/, MAINTAINERS, a driver or arch directory this config never builds, a
  header nothing includes, a .c file no Makefile compiles) is not.

With CONFIG_IKHEADERS every header is packed into the kernel, so every header counts.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.process import git

USED_FILE = "used-files.json"
TRACKED_SOURCES = (".c", ".h", ".S", ".s", ".lds", ".rs")  # what gcc -MD (rustc --emit=dep-info) records
ALWAYS_USED_TOPS = ("scripts", "tools")
MAKE_FILE = re.compile(r"^(Makefile|Kbuild)([._-].*)?$|\.mk$")
_PATH_TOKEN = re.compile(r"^[A-Za-z0-9_./+-]+$")


def _norm(token: str, objdir: Path, srcdir: Path) -> str | None:
    """A path as written in a .cmd file (relative to objdir, or absolute) relative to srcdir, or None."""
    p = token if os.path.isabs(token) else os.path.join(objdir, token)
    p = os.path.normpath(p)
    root = os.path.normpath(srcdir)
    if not p.startswith(root + os.sep):
        return None
    return p[len(root) + 1:]


def _cmd_files(top: Path):
    for d, dirs, files in os.walk(top):
        if ".git" in dirs:
            dirs.remove(".git")
        for f in files:
            if f.startswith(".") and f.endswith(".cmd"):
                yield Path(d), f


def collect(objdir: Path, srcdir: Path, module_dirs: Sequence[Path] = ()) -> dict:
    """What the build in objdir (sources in srcdir; external modules built in module_dirs) used."""
    files: set[str] = set()
    dirs: set[str] = set()
    seen_tokens: dict[str, str | None] = {}

    def add_token(tok: str, base: Path) -> None:
        key = f"{base}\0{tok}"
        if key not in seen_tokens:
            found = _norm(tok, base, srcdir)
            seen_tokens[key] = found if found is not None and (srcdir / found).is_file() else None
        rel = seen_tokens[key]
        if rel is not None:
            files.add(rel)

    for top in (objdir, *module_dirs):
        for d, name in _cmd_files(top):
            if top == objdir:
                dirs.add(os.path.relpath(d, objdir) if d != objdir else "")
            _parse_cmd(d / name, lambda tok: add_token(tok, objdir))
    kconf = objdir / "include" / "config" / "auto.conf.cmd"
    if kconf.is_file():
        for m in re.finditer(r"^\s*(\S+?)\s*\\?$", kconf.read_text(errors="replace"), re.MULTILINE):
            add_token(m.group(1), srcdir)
    config = objdir / ".config"
    all_headers = config.is_file() and "CONFIG_IKHEADERS=y" in config.read_text(errors="replace").splitlines()
    return {"files": sorted(files), "dirs": sorted(dirs), "all_headers": all_headers}


def _parse_cmd(path: Path, add) -> None:
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("savedcmd_") or line.startswith("source_"):
            for tok in line.partition(":=")[2].split():
                if _PATH_TOKEN.match(tok) and "/" in tok:
                    add(tok)
        elif line.startswith("$(wildcard") or line.startswith("deps_") or line.startswith("$(deps_"):
            continue
        elif line.endswith("\\") or (line and " " not in line and not line.endswith(":")):
            tok = line.rstrip("\\").strip()
            if tok and _PATH_TOKEN.match(tok):
                add(tok)


def save(bdir: Path, used: dict) -> None:
    tmp = bdir / f".{USED_FILE}.tmp"
    tmp.write_text(json.dumps(used) + "\n")
    tmp.replace(bdir / USED_FILE)


def load(bdir: Path) -> dict | None:
    try:
        return json.loads((bdir / USED_FILE).read_text())
    except (OSError, ValueError):
        return None


def _in_or_above(d: str, built: set[str]) -> bool:
    if d in built:
        return True
    prefix = d + "/" if d else ""
    return any(b.startswith(prefix) for b in built)


def used_paths(used: dict, paths: list[str]) -> list[str]:
    """The paths (relative to the tree) among `paths` that the build described by `used` used."""
    files = set(used.get("files", []))
    built = set(used.get("dirs", []))
    out = []
    for p in paths:
        d, base = os.path.dirname(p), os.path.basename(p)
        top = p.split("/", 1)[0]
        header = p.endswith(".h")
        if (p in files or top in ALWAYS_USED_TOPS or base.startswith("localversion")
                or (header and used.get("all_headers"))
                or (MAKE_FILE.search(base) and _in_or_above(d, built))
                or (d and d in built and not p.endswith(TRACKED_SOURCES))):
            out.append(p)
    return out


def patch_paths(patch: bytes) -> list[str]:
    """Every path a patch creates, changes or deletes (git apply --numstat), and the old names of the files it
    renames (its "rename from" lines)."""
    res = git(None, "apply", "--numstat", "-z", "-", input=patch, binary=True, check=False)
    if res.returncode != 0:
        raise HarnessError(f"git apply --numstat: {res.stderr.decode(errors='replace').strip()}")
    paths = [f.decode(errors="surrogateescape").split("\t", 2)[2] for f in res.stdout.split(b"\0") if f]
    for m in re.finditer(rb"^rename from (.+)$", patch, re.MULTILINE):
        raw = m.group(1)
        if raw.startswith(b'"'):  # git's C-style quoting of unusual names
            raw = codecs.escape_decode(raw[1:-1])[0]
        paths.append(raw.decode(errors="surrogateescape"))
    return paths
