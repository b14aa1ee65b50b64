"""Ablation: the step specs, and what each step is judged to have moved (synthetic bundles, no guest)."""

from __future__ import annotations

import sys
from pathlib import Path

import bundle_synth as synth
import pytest

from harness.attribution.ablation import ablate, ablation_steps, plot, to_markdown
from harness.errors import InputError
from harness.kernels.spec import parse_kernel_spec
from harness.results.bundle import load_bundle

sys.path.insert(0, str(Path(__file__).parent.parent / "kernels"))
from test_kernel_build import MAIL, make_series  # noqa: E402


def samples(fault, skipped):
    return {("fault_in_ms", "touch"): fault, ("vmstat.pgzero_skip_reported", "touch"): skipped,
            ("nonzero_pages", "touch"): [0, 0, 0]}


def test_each_step_is_judged_against_the_one_before(tmp_path):
    kernels = ["base+zs", "base+zs+s@1", "base+zs+s"]
    b = synth.write_bundle(tmp_path / "b", {
        kernels[0]: samples([520.2, 520.3, 520.2], [0, 0, 0]),
        kernels[1]: samples([520.4, 520.3, 520.4], [0, 0, 0]),       # patch 1: nothing measurable
        kernels[2]: samples([288.6, 288.6, 288.7], [56997, 56990, 57001]),  # patch 2: the skip
    }, timing="icount", accel="tcg")
    steps = ablate(load_bundle(b), kernels, ["baseline", "s 1/2: refactor", "s 2/2: skip zeroing"], 5.0)
    assert steps[1].moved == [] and steps[1].unsure == []
    moved = {r.judgement.name: r.judgement.verdict for r in steps[2].moved}
    assert moved == {"fault_in_ms": "improvement", "vmstat.pgzero_skip_reported": "improvement"}
    text = to_markdown(steps, "From a test.")
    assert "| 1 | s 1/2: refactor | nothing |" in text
    assert "**improvement** fault_in_ms@touch 520.4 → 288.6 (-44.5%)" in text
    assert plot(steps, load_bundle(b), tmp_path / "ablation.png") and (tmp_path / "ablation.png").stat().st_size > 0


def test_ablation_steps_name_every_prefix(tmp_path, monkeypatch):
    make_series(tmp_path, "s", {"0001-a.patch": MAIL.format(subject="mm: first", line="x"),
                                "0002-b.patch": MAIL.format(subject="mm: second", line="y")})
    make_series(tmp_path, "t", {"0001-c.patch": MAIL.format(subject="mm: third", line="z")})
    monkeypatch.setenv("BALLOON_TESTBED_PATCHES", str(tmp_path))
    specs, labels = ablation_steps(parse_kernel_spec("base+zs"), ["s", "t"])
    assert [s.text for s in specs] == ["base+zs", "base+zs+s@1", "base+zs+s", "base+zs+s+t"]
    assert specs == [parse_kernel_spec(s.text) for s in specs]
    assert labels[1:] == ["s 1/2: mm: first", "s 2/2: mm: second", "t 1/1: mm: third"]
    with pytest.raises(InputError, match="named twice"):
        ablation_steps(parse_kernel_spec("base+s"), ["s"])
    with pytest.raises(InputError, match="name a whole series"):
        ablation_steps(parse_kernel_spec("base"), ["s@1"])
    with pytest.raises(InputError, match="no directory"):
        ablation_steps(parse_kernel_spec("base"), ["nope"])


def test_bisect_candidates_over_a_series(tmp_path, monkeypatch):
    from harness.attribution.bisection import series_candidates

    make_series(tmp_path, "s", {f"000{i}-p.patch": MAIL.format(subject=f"mm: p{i}", line=f"l{i}") for i in (1, 2, 3)})
    make_series(tmp_path, "zs", {"0001-z.patch": MAIL.format(subject="z", line="z")})
    monkeypatch.setenv("BALLOON_TESTBED_PATCHES", str(tmp_path))
    p = parse_kernel_spec
    specs, labels = series_candidates(p("base+zs"), p("base+zs+s"))
    assert [s.text for s in specs] == ["base+zs", "base+zs+s@1", "base+zs+s@2", "base+zs+s"]
    assert specs == [p(s.text) for s in specs]
    assert labels[3] == "s 3/3: mm: p3"
    specs, _ = series_candidates(p("base+zs+s@1"), p("base+zs+s@2"))
    assert [s.text for s in specs] == ["base+zs+s@1", "base+zs+s@2"]
    for good, bad in (("base", "base+zs+s"), ("base+zs+s@2", "base+zs+s@2"), ("stock", "base+s")):
        with pytest.raises(InputError):
            series_candidates(p(good), p(bad))


def test_bisect_candidates_over_a_tree(tmp_path):
    import subprocess

    from harness.attribution.bisection import tree_candidates

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    for i in range(4):
        (tmp_path / "f").write_text(str(i))
        git("add", "f")
        git("commit", "-qm", f"mm: change {i}")
    commits, labels = tree_candidates(tmp_path, "HEAD~3", "HEAD")
    assert len(commits) == 4 and len(commits[0]) == 40
    assert labels[0].startswith("good end (") and labels[3].endswith("mm: change 3")
    with pytest.raises(InputError, match="not a descendant"):
        tree_candidates(tmp_path, "HEAD", "HEAD~2")
    with pytest.raises(InputError, match="git rev-parse"):
        tree_candidates(tmp_path, "nope", "HEAD")
