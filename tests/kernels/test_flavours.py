"""Kernel flavours (%NAME): parsing, the fragments and boot parameters they select, the cache key, and bad
input (an unknown flavour, an option that does not survive olddefconfig) as exit 2 with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError, InputError
from harness.kernels import config as kconf
from harness.kernels import inputs as ki
from harness.kernels.build import build_key
from harness.kernels.flavours import known_flavours, load_flavour
from harness.kernels.spec import parse_kernel_spec
from harness.kernels.tree import ensure_base_repo

REPO = Path(__file__).resolve().parents[2]


def harness(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


def test_a_spec_names_its_flavours_after_the_series():
    spec = parse_kernel_spec("base+zeroing-stats%page-poison%debug-vm")
    assert spec.series == ("zeroing-stats",)
    assert spec.flavours == ("page-poison", "debug-vm")
    assert spec.text == "base+zeroing-stats%page-poison%debug-vm"
    assert "%" not in spec.slug and spec.slug == "base+zeroing-stats~page-poison~debug-vm"


@pytest.mark.parametrize("text, words", [
    ("stock%debug-vm", "apply only to kernels the harness builds"),
    ("base%Debug", "bad flavour name"),
    ("base%debug-vm%debug-vm", "named twice"),
])
def test_malformed_flavours_are_bad_input(text, words):
    with pytest.raises(InputError, match=words):
        parse_kernel_spec(text)


def test_the_shipped_flavours_and_their_boot_parameters():
    assert {"debug-vm", "init-on-alloc", "init-on-free", "page-poison"} <= set(known_flavours())
    assert load_flavour("page-poison").boot_params == "page_poison=1"
    assert load_flavour("debug-vm").boot_params == ""


def test_a_flavour_changes_the_cache_key():
    base = ki.load_base()
    plain = ki.compute_key(base, [], ki.load_fragments(), "gcc", None)
    poisoned = ki.compute_key(base, [], ki.load_fragments([load_flavour("page-poison").fragment]), "gcc", None)
    assert plain != poisoned


def test_an_unknown_flavour_is_bad_input_before_anything_boots(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nguest: {memory: 512M, cpus: 1}\nsteps: [sleep: 1]\n")
    proc = harness("run", scenario, "--kernel", "base%no-such-flavour", "--results", tmp_path / "r")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown kernel flavour 'no-such-flavour'" in lines[0], proc.stderr
    assert "page-poison" in lines[0]  # it lists the known ones
    assert not (tmp_path / "r").exists()


def _frag(tmp_path: Path, name: str, text: str) -> ki.Fragment:
    p = tmp_path / name
    p.write_text(text)
    return ki.Fragment(p, p.read_bytes())


def test_a_flavour_option_dropped_by_olddefconfig_is_bad_input_naming_the_fragment(tmp_path):
    frags = [_frag(tmp_path, "guest.config", "CONFIG_SMP=y\n"),
             _frag(tmp_path, "debug.config", "CONFIG_DEBUG_VM_PGFLAGS=y\n")]
    with pytest.raises(InputError) as exc:
        kconf.check_config(frags, "CONFIG_SMP=y\n")
    assert "\n" not in str(exc.value)
    assert "debug.config" in str(exc.value) and "CONFIG_DEBUG_VM_PGFLAGS" in str(exc.value)
    assert "guest.config" not in str(exc.value)


def test_the_default_fragment_dropping_an_option_is_the_harness_fault(tmp_path):
    frags = [_frag(tmp_path, "guest.config", "CONFIG_SMP=y\n")]
    with pytest.raises(HarnessError) as exc:
        kconf.check_config(frags, "")
    assert not isinstance(exc.value, InputError)


@pytest.mark.kernels
def test_a_real_config_run_refuses_an_option_without_its_dependency(tmp_path):
    """DEBUG_VM_PGFLAGS depends on DEBUG_VM: olddefconfig drops it, and the build stops with exit 2."""
    root = tmp_path / "patches"
    (root / "config" / "flavours").mkdir(parents=True)
    (root / "config" / "flavours" / "pgflags-alone.config").write_text("CONFIG_DEBUG_VM_PGFLAGS=y\n")
    env = dict(__import__("os").environ, BALLOON_TESTBED_PATCHES=str(root))
    proc = harness("kernel", "build", "base%pgflags-alone", env=env)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "pgflags-alone.config" in last and "CONFIG_DEBUG_VM_PGFLAGS" in last, proc.stderr


@pytest.mark.kernels
@pytest.mark.parametrize("name", known_flavours())
def test_every_shipped_flavour_survives_olddefconfig(name, tmp_path):
    """Configure (no build) the pinned base with guest.config and the flavour, as a build does."""
    src = ensure_base_repo()
    frags = ki.load_fragments([load_flavour(name).fragment])
    subprocess.run(["make", "-s", f"O={tmp_path}", "tinyconfig"], cwd=src, check=True, capture_output=True)
    subprocess.run([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(tmp_path), ".config",
                    *(str(f.path) for f in frags)], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["make", "-s", f"O={tmp_path}", "olddefconfig"], cwd=src, check=True, capture_output=True)
    kconf.check_config(frags, (tmp_path / ".config").read_text())


def test_the_plan_s_build_key_is_the_flavoured_build_s_key():
    """harness plan names the key a shard needs: a flavour must change it as it changes the build."""
    assert build_key(parse_kernel_spec("base%page-poison")) != build_key(parse_kernel_spec("base"))
