"""A scenario's own files: bad input refused before boot, the image cached by content, and (marked vm) a
static binary added through guest.files and another uploaded over SSH, both run in a real guest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.guest.image import build_image
from harness.kernels.resolve import resolve_kernel
from harness.kernels.spec import parse_kernel_spec
from harness.scenario.schema import load_scenario

HELLO_C = Path(__file__).resolve().parent.parent / "data" / "guest_files" / "hello.c"


def compile_hello(out: Path, static: bool = True) -> Path:
    subprocess.run(["gcc", *(["-static"] if static else []), "-O2", "-o", str(out), str(HELLO_C)], check=True)
    return out


def scenario(tmp_path: Path, files=None, steps=None) -> Path:
    guest = {"memory": "512M", "cpus": 1, **({"files": files} if files else {})}
    doc = {"name": "own-files", "guest": guest,
           "qemu": {"balloon": {"free_page_reporting": False}}, "steps": steps or ["snapshot"]}
    path = tmp_path / "own-files.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_cli(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True)


@pytest.mark.parametrize("where", ["files", "upload"])
def test_a_missing_file_is_bad_input_naming_it(tmp_path, where):
    if where == "files":
        path = scenario(tmp_path, files=["nope/hello"])
    else:
        path = scenario(tmp_path, steps=[{"upload": {"src": "nope/hello", "dest": "/tmp/hello"}}])
    proc = run_cli(path, tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "nope/hello: no such file or directory" in line
    assert ("guest.files[0]" if where == "files" else "steps[0].upload") in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["files", "upload", "directory"])
def test_a_dynamically_linked_binary_is_bad_input_naming_it(tmp_path, where):
    (tmp_path / "bin").mkdir()
    dyn = compile_hello(tmp_path / "bin" / "hello-dyn", static=False)
    if where == "files":
        path = scenario(tmp_path, files=["bin/hello-dyn"])
    elif where == "directory":
        path = scenario(tmp_path, files=[{"src": "bin", "dest": "/opt/mine"}])
    else:
        path = scenario(tmp_path, steps=[{"upload": {"src": "bin/hello-dyn", "dest": "/tmp/hello"}}])
    proc = run_cli(path, tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"{dyn} is dynamically linked" in line and "-static" in line


def test_files_resolve_relative_to_the_scenario_and_default_to_usr_local_bin(tmp_path):
    (tmp_path / "tools").mkdir()
    hello = compile_hello(tmp_path / "tools" / "hello")
    (tmp_path / "tools" / "data.txt").write_text("42\n")
    sc = load_scenario(scenario(tmp_path, files=["tools/hello", {"src": "tools", "dest": "/opt/tools"}]))
    assert sc.files == {"/usr/local/bin/hello": hello, "/opt/tools/hello": hello,
                        "/opt/tools/data.txt": tmp_path / "tools" / "data.txt"}
    with pytest.raises(InputError, match="dest 'opt' must be an absolute guest path"):
        load_scenario(scenario(tmp_path, files=[{"src": "tools/hello", "dest": "opt"}]))


def test_the_image_with_own_files_is_cached_by_content(tmp_path):
    kernel = resolve_kernel(parse_kernel_spec("stock"))
    data = tmp_path / "data.txt"
    data.write_text("one\n")
    first = build_image(kernel, {"/opt/data.txt": data})
    assert build_image(kernel, {"/opt/data.txt": data}) == first
    assert first != build_image(kernel), "the overlay is part of the image"
    data.write_text("two\n")
    changed = build_image(kernel, {"/opt/data.txt": data})
    assert changed != first
    listing = subprocess.run(["cpio", "-t"], stdin=changed.open("rb"), capture_output=True, text=True).stdout
    assert "opt/data.txt" in listing.split()


@pytest.mark.vm
def test_own_static_binaries_run_in_a_real_guest(tmp_path):
    from harness.results.scenario_run import run_scenario

    compile_hello(tmp_path / "hello")
    compile_hello(tmp_path / "hello-up")
    path = scenario(tmp_path, files=["hello"], steps=[
        {"upload": {"src": "hello-up", "dest": "/root/bin/hello-up"}, "phase": "upload"},
        {"shell": "/usr/local/bin/hello a b && /root/bin/hello-up", "phase": "mine"},
    ])
    outcome = run_scenario(path, kernels=[parse_kernel_spec("stock")], results_dir=tmp_path / "r")
    assert outcome.status == "complete", outcome.error
    rep = outcome.bundle / "stock" / "rep1"
    assert (rep / "shell-mine.txt").read_text() == ("hello from /usr/local/bin/hello with 2 argument(s)\n"
                                                    "hello from /root/bin/hello-up with 0 argument(s)\n")
    steps = {s["phase"]: s for s in json.loads((rep / "steps.json").read_text())}
    assert steps["upload"]["bytes"] == (tmp_path / "hello-up").stat().st_size
    assert steps["mine"]["rc"] == 0
