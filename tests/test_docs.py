"""What the READMEs tell a user is true: every kernel spec they write parses and names series and flavours
that exist, every repository path they name exists, every `harness ...` example names a real subcommand and
only options it has, every `make TARGET` is a Makefile target, and results/README.md lists only files the
harness writes."""

from __future__ import annotations

import ast
import re
import shlex

import pytest

from harness.cli import build_parser
from harness.kernels.flavours import load_flavours
from harness.kernels.inputs import load_series
from harness.kernels.resolve import check_available
from harness.kernels.spec import parse_kernel_spec, series_ref
from harness.paths import REPO_ROOT

DOCS = ["README.md", "kernel_patches/README.md", "results/README.md"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
SPEC = re.compile(r"(?<![\w/.+-])((?:stock|base)(?:\+[\w.@-]+)*(?:%[\w-]+)*)(?![\w/])")
# A placeholder the reader fills in: base+SERIES, base+A+B, base+..., NAME.config, <key>, *, {off,on}.
PLACEHOLDER = re.compile(r"<|>|\*|\{|\.\.\.|(^|[/+%@-])[A-Z][A-Z_]*(\b|$)")
# Paths inside a kernel source tree, not this repository.
KERNEL_TREE = ("tools/testing/",)


def doc_text(doc: str) -> tuple[list[str], list[str]]:
    """(the lines of its code blocks, with continuations joined; its inline code spans)."""
    text = (REPO_ROOT / doc).read_text()
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    return lines, SPAN.findall(FENCE.sub("", text))


def specs_in(doc: str) -> set[str]:
    lines, spans = doc_text(doc)
    return {s for chunk in lines + spans for s in SPEC.findall(chunk) if not PLACEHOLDER.search(s)}


def paths_in(doc: str) -> set[str]:
    """Repository paths a document names in code spans (relative to the repository or to the document) and
    links; absolute, home and placeholder paths are not the repository's."""
    _, spans = doc_text(doc)
    here = (REPO_ROOT / doc).parent
    top = {p.name for p in REPO_ROOT.iterdir()} | {p.name for p in here.iterdir()}
    found = set()
    for s in spans:
        if "/" in s and " " not in s and not s.startswith(("/", "~")) and not PLACEHOLDER.search(s):
            if s.split("/")[0] in top and not s.startswith(KERNEL_TREE):
                found.add(s)
    links = LINK.findall((REPO_ROOT / doc).read_text())
    found |= {link.split("#")[0] for link in links if not re.match(r"\w+:", link) and link.split("#")[0]}
    return found


def commands_in(doc: str) -> list[list[str]]:
    """Every `harness ...` example: the words after `harness`, up to a pipe, redirection or comment."""
    lines, spans = doc_text(doc)
    out = []
    for chunk in lines + spans:
        try:
            words = shlex.split(chunk, comments=True)
        except ValueError:
            words = chunk.split()
        for i, w in enumerate(words):
            if w == "harness" or w.endswith("/harness"):
                rest = []
                for word in words[i + 1:]:
                    if word in ("|", ">", "&&", ";") or word.startswith(">"):
                        break
                    rest.append(word)
                if rest:
                    out.append(rest)
    return out


def subparsers(parser) -> dict:
    return next((a.choices for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), {})


def check_command(words: list[str]) -> str | None:
    """None when the example's subcommand exists and has every --option it uses; else what is wrong."""
    parser, used = build_parser(), ["harness"]
    while (choices := subparsers(parser)) and words and not words[0].startswith("-"):
        if words[0] not in choices:
            return f"{' '.join(used)} has no subcommand {words[0]!r} (it has {', '.join(choices)})"
        used.append(words[0])
        parser, words = choices[words[0]], words[1:]
    if subparsers(parser):
        return None  # `harness kernel` on its own, say: the doc names the group
    options = parser._option_string_actions
    for w in words:
        if w == "--":  # the end of its options: what follows is another command's
            break
        if w.startswith("--") and w.split("=")[0] not in options:
            return f"{' '.join(used)} has no option {w.split('=')[0]} (see {' '.join(used)} --help)"
    return None


@pytest.mark.parametrize("doc", DOCS)
def test_every_kernel_spec_parses_and_names_what_exists(doc):
    specs = specs_in(doc)
    assert "base" in specs or "stock" in specs, "found no spec: the extraction is broken"
    # A series the document has the reader make (`mkdir kernel_patches/my-fix`) is the reader's.
    own = set(re.findall(r"mkdir (?:-p )?kernel_patches/([\w.-]+)", (REPO_ROOT / doc).read_text()))
    for text in sorted(specs):
        spec = parse_kernel_spec(text)
        load_flavours(spec.flavours)  # InputError naming the missing flavour or series
        for ref in spec.series:
            if series_ref(ref)[0] not in own:
                load_series(ref)


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_exists(doc):
    here = (REPO_ROOT / doc).parent
    missing = [p for p in sorted(paths_in(doc)) if not (REPO_ROOT / p).exists() and not (here / p).exists()]
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_harness_example_names_a_real_subcommand_and_its_options(doc):
    commands = commands_in(doc)
    assert commands, "found no harness example: the extraction is broken"
    problems = [f"harness {' '.join(c)}: {p}" for c in commands if (p := check_command(c))]
    assert not problems, "\n".join(problems)


def test_every_make_target_exists():
    """In the READMEs about this repository (kernel_patches/README.md's `make` is the kernel's)."""
    targets = set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), re.M))
    for doc in ("README.md", "results/README.md"):
        lines, spans = doc_text(doc)
        for chunk in lines + spans:
            for target in re.findall(r"(?:^|\s)make ([\w-]+)", chunk):
                assert target in targets, f"{doc}: make {target}: no such Makefile target"


def test_the_checks_find_what_is_wrong():
    assert check_command(["run", "x.yaml", "--kernel", "stock"]) is None
    assert check_command(["kernel", "build", "--tree", "."]) is None
    assert "no subcommand 'rnu'" in check_command(["rnu", "x.yaml"])
    assert "no option --kernels" in check_command(["run", "x.yaml", "--kernels", "stock"])
    assert "no subcommand 'biuld'" in check_command(["kernel", "biuld"])
    assert check_command(["kvm-runner", "--", "harness", "doctor", "--anything"]) is None
    assert not PLACEHOLDER.search("base+zeroing-stats+balloon-opt-ins@1%page-poison")
    assert all(PLACEHOLDER.search(s) for s in ("base+SERIES", "base+A+B", "base+...", "flavours/NAME.config"))
    with pytest.raises(Exception, match="no-such"):
        check_available(parse_kernel_spec("base+no-such"))


def harness_strings() -> tuple[str, list[re.Pattern]]:
    """Every string constant in harness/ (joined), and each f-string as a pattern (a {field} matches anything)."""
    constants, patterns = [], []
    for path in (REPO_ROOT / "harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                constants.append(node.value)
            elif isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant) \
                    and len(node.values[0].value) >= 4:  # f"{x}.json" would match any name
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".*" for v in node.values]
                patterns.append(re.compile("".join(parts)))
    return "\n".join(constants), patterns


def test_every_file_results_readme_describes_is_one_the_harness_writes():
    """results/README.md is the format: a file name it lists (bisect's search.json was one) is in the code,
    written out or made by an f-string (qemu-argv{suffix}.json)."""
    constants, patterns = harness_strings()
    text = (REPO_ROOT / "results" / "README.md").read_text()
    names = set(re.findall(r"(?<![\w/<-])([\w.-]+\.(?:json|log|md|csv|png|txt|xml|html))\b", text))
    assert {"manifest.json", "metrics.json", "bisect.json"} <= names
    def written(name: str) -> bool:
        return name in constants or any(p.fullmatch(name) for p in patterns)

    unknown = sorted(n for n in names if not written(n))
    assert not unknown, f"results/README.md names files no harness code writes: {unknown}"
    assert not written("search.json") and written("shell-touch.txt")
