"""SERIES@N kernel specs: the first N patches of a series, everywhere a spec goes."""

from __future__ import annotations

import pytest
from test_kernel_build import MAIL, make_series

from harness.errors import InputError
from harness.kernels import inputs as ki
from harness.kernels.spec import parse_kernel_spec, series_ref


@pytest.fixture
def three(tmp_path):
    make_series(tmp_path, "S", {f"000{i}-p{i}.patch": MAIL.format(subject=f"p{i}", line=f"l{i}") for i in (1, 2, 3)})
    make_series(tmp_path, "T", {"0001-t.patch": MAIL.format(subject="t", line="t")})
    return tmp_path


def key(root, refs):
    return ki.compute_key(ki.load_base(), ki.load_stack(refs, root), ki.load_fragments(), "gcc 12", None)


def test_spec_grammar():
    spec = parse_kernel_spec("base+zeroing-stats+pg-zeroed@3")
    assert spec.series == ("zeroing-stats", "pg-zeroed@3")
    assert spec.slug == "base+zeroing-stats+pg-zeroed@3"
    assert series_ref("pg-zeroed@3") == ("pg-zeroed", 3) and series_ref("pg-zeroed") == ("pg-zeroed", None)
    assert series_ref("s@0") == ("s", 0)


@pytest.mark.parametrize("text, problem", [
    ("base+s@", "bad series name 's@'"),
    ("base+s@-1", "bad series name"),
    ("base+s@x", "bad series name"),
    ("base+s@1+s@2", "a series is named twice"),
])
def test_bad_prefix_syntax_is_bad_input(text, problem):
    with pytest.raises(InputError, match=problem):
        parse_kernel_spec(text)


def test_prefix_applies_the_first_n_patches(three):
    s = ki.load_series("S@2", three)
    assert s.name == "S" and [p.file for p in s.patches] == ["0001-p1.patch", "0002-p2.patch"] and s.total == 3


def test_prefix_beyond_the_series_is_bad_input(three):
    with pytest.raises(InputError, match="has 3 patches; 'S@4' asks for the first 4"):
        ki.load_series("S@4", three)


def test_whole_prefix_and_empty_prefix_share_the_cache(three):
    assert key(three, ["S@3"]) == key(three, ["S"])
    assert key(three, ["S@0", "T"]) == key(three, ["T"])
    assert len({key(three, ["S@1"]), key(three, ["S@2"]), key(three, ["S"])}) == 3
