"""kernel_patches/ keeps every kernel change exactly once (issue 11).

Fast checks (no VM, no build): no two series carry the same patch body (or nearly the same added
lines), every series file lists patches that exist, and every stack that kernel_patches/README.md
calls legal names series that exist, each at most once.  The slow check (marked `kernels`) applies
every legal stack, in order, to the pinned base tree with `git apply --cached`, the machinery
`git am` uses.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from pathlib import Path

import pytest

from harness.kernels.stacks import load_stacks, stacks_table
from harness.paths import REPO_ROOT

# The series the harness builds from: $BALLOON_TESTBED_PATCHES when set, as in harness/kernel_inputs.py.
PATCHES = Path(os.environ.get("BALLOON_TESTBED_PATCHES") or REPO_ROOT / "kernel_patches").expanduser().resolve()
README = PATCHES / "README.md"
LEGAL_HEADING = "## Legal stacks"
# Two patches whose added lines are at least this similar are near-duplicates.
NEAR_DUPLICATE = 0.90
# Below this many added lines a patch is too small for the near-duplicate check to mean anything.
NEAR_DUPLICATE_MIN_LINES = 8


def series_dirs() -> list[Path]:
    return sorted(p.parent for p in PATCHES.glob("*/series"))


def series_entries(d: Path) -> list[str]:
    names = []
    for raw in (d / "series").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def all_patches() -> list[tuple[str, Path]]:
    return [(d.name, d / name) for d in series_dirs() for name in series_entries(d)]


def diff_body(text: str) -> list[str]:
    """The +/- lines of a format-patch mail's diff, whitespace-normalised; headers and context dropped."""
    body: list[str] = []
    in_diff = False
    for line in text.splitlines():
        if line.startswith("diff --git "):
            in_diff = True
            continue
        if not in_diff:
            continue
        if line == "-- ":  # the mail signature after the last hunk
            break
        if line.startswith(("+++ ", "--- ", "index ", "@@", "new file mode", "deleted file mode",
                            "similarity index", "rename from", "rename to", "old mode", "new mode")):
            continue
        if line[:1] in "+-":
            body.append(line[0] + " ".join(line[1:].split()))
    return body


def added_lines(body: list[str]) -> list[str]:
    return [line[1:] for line in body if line.startswith("+") and line[1:].strip()]


def legal_stacks() -> list[tuple[str, str]]:
    """(spec, purpose) of every named stack (kernel_patches/stacks.yaml): the legal stacks."""
    return [(st.spec, st.purpose) for st in load_stacks().values()]


def test_readme_shows_the_stacks_file():
    """kernel_patches/README.md's "Legal stacks" table is `harness kernel list --stacks --md`, not a copy edited
    by hand."""
    section = README.read_text().split(LEGAL_HEADING, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"
    assert table == stacks_table(), "regenerate it: harness kernel list --stacks --md"


def test_there_are_series_and_legal_stacks():
    assert len(series_dirs()) >= 5
    assert len(legal_stacks()) >= 5


@pytest.mark.parametrize("series", [d.name for d in series_dirs()])
def test_series_file_lists_existing_patches(series):
    d = PATCHES / series
    names = series_entries(d)
    assert names, f"{d}/series lists no patch"
    assert len(names) == len(set(names)), f"{d}/series lists a patch twice"
    for name in names:
        assert (d / name).is_file(), f"{d}/series lists {name}, which does not exist"
        assert diff_body((d / name).read_text()), f"{d / name} has no diff"
    stray = sorted(p.name for p in d.glob("*.patch") if p.name not in names)
    assert not stray, f"{d}: patches not in its series file: {stray}"
    assert (d / "README.md").is_file(), f"{d} has no README.md"


def test_no_two_series_carry_the_same_patch_body():
    seen: dict[tuple[str, ...], str] = {}
    dupes = []
    for series, path in all_patches():
        body = tuple(diff_body(path.read_text()))
        where = f"{series}/{path.name}"
        if body in seen:
            dupes.append(f"{where} == {seen[body]}")
        else:
            seen[body] = where
    assert not dupes, "the same change in two places:\n" + "\n".join(dupes)


def test_no_near_duplicate_patches():
    """Two patches whose added lines are >90% the same, or one whose added lines are >90% inside another,
    are one change copied (and then edited)."""
    patches = [(f"{s}/{p.name}", added_lines(diff_body(p.read_text()))) for s, p in all_patches()]
    near = []
    for (a, la), (b, lb) in itertools.combinations(patches, 2):
        if a.split("/")[0] == b.split("/")[0]:
            continue  # within one series patches may legitimately resemble each other
        if min(len(la), len(lb)) < NEAR_DUPLICATE_MIN_LINES:
            continue
        matcher = difflib.SequenceMatcher(None, la, lb, autojunk=False)
        ratio = matcher.ratio()
        # A patch copied into a bigger one: most of the smaller one's added lines reappear there.
        contained = sum(m.size for m in matcher.get_matching_blocks()) / min(len(la), len(lb))
        if ratio > NEAR_DUPLICATE:
            near.append(f"{a} ~ {b}: {ratio:.0%} of the added lines are the same")
        elif contained > NEAR_DUPLICATE:
            near.append(f"{a} ~ {b}: {contained:.0%} of the smaller patch's added lines are in the other")
    assert not near, "near-duplicate patches:\n" + "\n".join(near)


def test_diff_body_ignores_headers_and_whitespace():
    a = "Subject: x\n\ndiff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -1 +1 @@ ctx\n-old\n+new  line\n-- \n2.39\n"
    b = "Subject: y\n\ndiff --git a/f b/f\nindex 3..4 100644\n--- a/f\n+++ b/f\n@@ -7 +7 @@ other\n-old\n+new\tline\n"
    assert diff_body(a) == diff_body(b) == ["-old", "+new line"]


def test_legal_stacks_name_existing_series():
    known = {d.name for d in series_dirs()}
    bad = []
    for spec, purpose in legal_stacks():
        parts = spec.split("+")
        if parts[0] != "base":
            bad.append(f"{spec}: does not start with 'base'")
        names = parts[1:]
        if len(names) != len(set(names)):
            bad.append(f"{spec}: names a series twice")
        bad += [f"{spec}: no series {n!r} in {PATCHES}" for n in names if n not in known]
        if not purpose:
            bad.append(f"{spec}: no purpose given")
    assert not bad, "\n".join(bad)


def test_every_series_is_in_some_legal_stack():
    used = {n for spec, _ in legal_stacks() for n in spec.split("+")[1:]}
    unused = sorted({d.name for d in series_dirs()} - used)
    assert not unused, f"series in no legal stack of {README}: {unused}"


def test_a_named_stack_is_a_spec_wherever_a_spec_is():
    from harness.kernels.spec import parse_kernel_spec

    seed = load_stacks()["seed002"]
    for text, flavours, extra in (("seed002", (), ()), ("seed002%debug-vm", ("debug-vm",), ()),
                                  ("seed002+zeroing-sources", (), ("zeroing-sources",))):
        spec = parse_kernel_spec(text)
        assert spec.text == text and spec.stack == "seed002" and spec.flavours == flavours
        assert spec.series == tuple(seed.spec.split("+")[1:]) + extra
        assert spec.expanded.startswith(seed.spec)


def test_a_malformed_stacks_file_is_one_line(tmp_path):
    from harness.errors import InputError

    bad = tmp_path / "stacks.yaml"
    for text, says in (("- {name: a, spec: base}\n- {name: a, spec: base+x, purpose: p}\n", "purpose"),
                       ("- {name: a, spec: base, purpose: p}\n- {name: a, spec: base+x, purpose: p}\n", "taken"),
                       ("- {name: a, spec: 'base%debug-vm', purpose: p}\n", "spec"),
                       ("- {name: stock, spec: base, purpose: p}\n", "taken")):
        bad.write_text(text)
        with pytest.raises(InputError, match=says) as exc:
            load_stacks.__wrapped__(bad)
        assert "\n" not in str(exc.value) and str(bad) in str(exc.value)


def _legal_specs() -> list[str]:
    try:
        return [spec for spec, _ in legal_stacks()]
    except AssertionError:
        return []  # test_there_are_series_and_legal_stacks says why


@pytest.mark.kernels
@pytest.mark.parametrize("spec", _legal_specs())
def test_legal_stack_applies_to_the_base(spec):
    """Each patch of the stack applies, in order, to the pinned base (the build's own check: a scratch index,
    no checkout)."""
    from harness.kernels.inputs import load_base, load_stack
    from harness.kernels.spec import parse_kernel_spec
    from harness.kernels.tree import check_series_applies, ensure_base_repo

    check_series_applies(ensure_base_repo(load_base()), load_stack(parse_kernel_spec(spec).series, PATCHES))
