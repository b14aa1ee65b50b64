"""`harness bisect-check` under a real `git bisect run`: its exit codes say good (0), bad (1), skip (125) or
abort (128), and git reads them so.

git bisect run takes 0 as good, 1-127 but 125 as bad, 125 as skip and anything else as "abort".  Usage and
input errors must abort (never mark a commit bad), harness errors while judging must skip, and a candidate
whose kernel crashes is bad unless --panic skip.

The tree is made here: one commit per candidate, each holding a file `kernel` with the kernel that commit
"builds to" (a cached kernel, so no build happens), and the run script judges that kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = [sys.executable, "-m", "harness.cli"]
SCENARIO = "name: s\nguest: {memory: 512M, cpus: 1}\nsteps: [sleep: 1]\n"

# The stock (Debian cloud) kernel stands for the "bad" commits: in a guest with 56 MiB of usable memory it
# panics at boot ("System is deadlocked on memory"; at 96 MiB it boots), while the small base kernel boots
# and runs the scenario (it does at 48 MiB, not at 40).
PANICS_STOCK_AT_BOOT = """
name: bisect-check
guest: {memory: 512M, cpus: 1, cmdline: "mem=56M"}
steps:
  - memtouch: 8M
    phase: touch
expect: {nonzero_pages: 0}
"""


def harness(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *map(str, args)], capture_output=True, text=True)


def git(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          capture_output=True, text=True)


def make_tree(path: Path, kernels: list[str]) -> list[str]:
    """A git tree whose commit k (1..n) names kernels[k-1] in its file `kernel`; commit 0 is the good end.
    Returns the commits' hashes, c0 first."""
    path.mkdir()
    git(path, "init", "-q")
    commits = []
    for i, kernel in enumerate(["(good end)", *kernels]):
        (path / "kernel").write_text(kernel + "\n")
        git(path, "add", "kernel")
        git(path, "commit", "-q", "--allow-empty", "-m", f"c{i}")
        commits.append(git(path, "rev-parse", "HEAD").stdout.strip())
    return commits


def bisect_run(tree: Path, check: str, env: dict) -> subprocess.CompletedProcess:
    """`git bisect run` from c0 (good) to the last commit (bad) with `check` as the script."""
    assert git(tree, "bisect", "start", "HEAD", "HEAD~" + str(len(git(tree, "log", "--format=%h").stdout.split()) - 1)
               ).returncode == 0
    return subprocess.run(["git", "-C", str(tree), "bisect", "run", "sh", "-c", check], capture_output=True,
                          text=True, env={**os.environ, **env})


@pytest.fixture
def scenario(tmp_path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    return path


# -- usage and input errors: 128, which aborts git bisect run --------------------------------------------


@pytest.mark.parametrize("args", [
    [],  # argparse: no scenario, no --good
    ["{s}", "--good", "stock", "--kernel", "base", "--no-such-option"],
    ["{s}", "--kernel", "base", "--expect", "nonzero_pages"],  # no --good
    ["{s}", "--good", "stock", "--kernel", "base", "--reps", "many"],
])
def test_usage_errors_exit_128(args, scenario):
    proc = harness("bisect-check", *[a.format(s=scenario) for a in args])
    assert proc.returncode == 128, proc.stderr
    assert "error:" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["{tmp}/none.yaml", "--good", "stock", "--kernel", "base", "--expect", "nonzero_pages"], "no such scenario"),
    (["{s}", "--good", "stock", "--kernel", "base"], "exactly one of --metric"),
    (["{s}", "--good", "stock", "--kernel", "base", "--metric", "fault_in_ms"], "NAME@PHASE"),
    (["{s}", "--good", "stock", "--expect", "nonzero_pages"], "exactly one of --kernel SPEC and --tree"),
    (["{s}", "--good", "stock", "--tree", "{tmp}/no-tree", "--expect", "nonzero_pages"], "no such directory"),
    (["{s}", "--good", "stock", "--kernel", "base+no-such-series", "--expect", "nonzero_pages"], "no-such-series"),
    (["{s}", "--good", "stock", "--kernel", "base", "--expect", "nonzero_pages", "--reps", "0"], "--reps"),
    (["{s}", "--good", "stock", "--kernel", "base", "--metric", "fault_in_ms@touch", "--bad-fail-rate", "0.3"],
     "--bad-fail-rate"),
    (["{s}", "--good", "stock", "--kernel", "base", "--expect", "nonzero_pages", "--bad-fail-rate", "1.5"],
     "--bad-fail-rate"),
])
def test_input_errors_exit_128_before_anything_runs(args, message, scenario, tmp_path):
    results = tmp_path / "results"
    proc = harness("bisect-check", *[a.format(s=scenario, tmp=tmp_path) for a in args], "--results", results)
    assert proc.returncode == 128, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not results.exists()


def test_git_bisect_run_aborts_on_a_usage_error_and_marks_nothing(tmp_path, scenario):
    tree = tmp_path / "tree"
    make_tree(tree, ["base", "base", "base"])
    proc = bisect_run(tree, '"$PY" -m harness.cli bisect-check "$S" --kernel "$(cat kernel)"',
                      {"PY": sys.executable, "S": str(scenario)})
    assert proc.returncode != 0
    assert "bisect run failed: exit code 128" in proc.stderr, proc.stderr
    log = git(tree, "bisect", "log").stdout
    assert "git bisect bad" not in log.split("git bisect start")[-1].split("\n", 1)[1], log


# -- a real git bisect run over cached kernels -----------------------------------------------------------


@pytest.fixture
def kernels(tmp_path) -> dict[str, str]:
    """The good end (a copy of the cached base bzImage: another spec, the same kernel), a kernel QEMU cannot
    start (an ELF file with nothing in it) and the stock kernel."""
    from harness.kernels.build import build_kernel
    from harness.kernels.spec import parse_kernel_spec

    good = tmp_path / "good" / "bzImage"
    good.parent.mkdir()
    shutil.copy(build_kernel(parse_kernel_spec("base")).bzimage, good)
    junk = tmp_path / "junk" / "vmlinux"
    junk.parent.mkdir()
    junk.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 4096)
    return {"good": str(good), "junk": str(junk)}


CHECK = ('"$PY" -m harness.cli bisect-check "$S" --good "$GOOD" --kernel "$(cat kernel)" --expect nonzero_pages '
         '--reps 1 --results "$R" $EXTRA')


@pytest.mark.vm
@pytest.mark.kernelbuild
def test_git_bisect_run_names_the_first_commit_that_panics_at_boot_and_skips_what_it_cannot_judge(tmp_path, kernels):
    """c1-c3 base (good), c4 stock (panics at boot: bad), c5 a kernel QEMU cannot start (skip), c6 stock: c4."""
    scenario = tmp_path / "panics-at-boot.yaml"
    scenario.write_text(PANICS_STOCK_AT_BOOT)
    tree = tmp_path / "tree"
    commits = make_tree(tree, ["base", "base", "base", "stock", kernels["junk"], "stock"])
    proc = bisect_run(tree, CHECK, {"PY": sys.executable, "S": str(scenario), "GOOD": kernels["good"],
                                    "R": str(tmp_path / "results"), "EXTRA": ""})
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr
    assert f"{commits[4]} is the first bad commit" in proc.stdout
    log = git(tree, "bisect", "log").stdout
    marks = [line.split()[2:4] for line in log.splitlines() if line.startswith("git bisect ") and
             line.split()[2] in ("good", "bad", "skip")]
    assert [(verdict, commits.index(sha)) for verdict, sha in marks] == [("good", 3), ("skip", 5), ("bad", 4)], log
    assert "bisect-check: bad: the kernel crashed: " in proc.stdout and "Kernel panic" in proc.stdout
    assert "bisect-check: skip: could not judge (harness error): QEMU exited" in proc.stdout
    assert "bisect-check: good: 1 clean repetition: a failure in 95% of runs or more would have shown" in proc.stdout


@pytest.mark.vm
@pytest.mark.kernelbuild
def test_a_candidate_that_panics_at_boot_is_skipped_with_panic_skip(tmp_path, kernels):
    scenario = tmp_path / "panics-at-boot.yaml"
    scenario.write_text(PANICS_STOCK_AT_BOOT)
    proc = harness("bisect-check", scenario, "--good", kernels["good"], "--kernel", "stock", "--expect",
                   "nonzero_pages", "--reps", "1", "--panic", "skip", "--results", tmp_path / "results")
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert "bisect-check: skip: the kernel crashed (--panic skip): " in proc.stdout, proc.stdout
    assert "Kernel panic" in proc.stdout
    (check_dir,) = (tmp_path / "results").glob("bisect-check-*")
    assert "# skip: [1] candidate -- the kernel crashed" in (check_dir / "bisect.log").read_text()


def test_an_unusable_results_directory_aborts(tmp_path, scenario):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results directory should be\n")
    proc = harness("bisect-check", scenario, "--good", "stock", "--kernel", "base", "--expect", "nonzero_pages",
                   "--results", blocker)
    assert proc.returncode == 128, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"harness: error: --results {blocker}: cannot create a directory "
                                                "there: File exists"], proc.stderr


def test_two_checks_in_the_same_second_get_their_own_directories(tmp_path):
    from harness.attribution.bisection import new_directory

    first, second = new_directory(tmp_path, "bisect-check"), new_directory(tmp_path, "bisect-check")
    assert first != second and first.is_dir() and second.is_dir()


@pytest.mark.vm
@pytest.mark.kernelbuild
def test_a_good_verdict_runs_as_many_clean_repetitions_as_the_bad_ends_failure_rate_needs(tmp_path, kernels):
    """A bug that fails 70 % of runs shows in 3 runs with 97 % confidence: one round of 1, one more of 2."""
    scenario = tmp_path / "panics-at-boot.yaml"
    scenario.write_text(PANICS_STOCK_AT_BOOT)
    proc = harness("bisect-check", scenario, "--good", kernels["good"], "--kernel", "base", "--expect",
                   "nonzero_pages", "--reps", "1", "--bad-fail-rate", "0.7", "--results", tmp_path / "results")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bisect-check: good: 3 clean repetitions: a failure rate of 70% (the bad end's, its 95% lower bound " \
           "where measured) would have shown with 97% confidence" in proc.stdout, proc.stdout
    (check_dir,) = (tmp_path / "results").glob("bisect-check-*")
    bundles = sorted((check_dir / "step-1").iterdir())
    assert [json.loads((b / "manifest.json").read_text())["reps"] for b in bundles] == [1, 2]
    (step,) = json.loads((check_dir / "bisect.json").read_text())["steps"]
    assert step["verdict"] == "good" and step["confidence"] == pytest.approx(1 - 0.3 ** 3)
