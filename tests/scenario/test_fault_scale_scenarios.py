"""The four fault-scale scenarios are one measurement in four configurations (opt-ins off/on x 1/2 vCPUs):
they must differ in nothing else, or a table across them would mix two changes."""

from __future__ import annotations

import itertools

import yaml

from harness.paths import REPO_ROOT

OPT_INS = "virtio_balloon.host_zeroes_reported=1 virtio_balloon.deflate_zeroed=1"
CONFIGS = {f"fault-scale-{feat}-{cpus}cpu": (feat, cpus) for feat, cpus in itertools.product(("off", "on"), (1, 2))}


def load(name):
    return yaml.safe_load((REPO_ROOT / "scenarios" / f"{name}.yaml").read_text())


def normalized(data):
    """The scenario without what its configuration sets."""
    data = {k: v for k, v in data.items() if k not in ("name", "description")}
    data["guest"] = {k: v for k, v in data["guest"].items() if k not in ("cpus", "cmdline")}
    data["qemu"] = {**data["qemu"], "balloon": {}}
    data["steps"] = [{**s, "fault_scale": {k: v for k, v in s["fault_scale"].items() if k != "workers"}}
                     for s in data["steps"]]
    return data


def test_each_configuration_sets_what_its_name_says():
    for name, (feat, cpus) in CONFIGS.items():
        data = load(name)
        assert data["name"] == name
        assert data["guest"]["cpus"] == cpus
        assert all(s["fault_scale"]["workers"] == cpus for s in data["steps"]), name
        assert data["guest"]["cmdline"] == ("" if feat == "off" else OPT_INS), name
        assert data["qemu"]["balloon"] == {"free_page_reporting": feat == "on"}, name
        assert data["qemu"]["timing"] == "icount"


def test_the_configurations_differ_in_nothing_else():
    first, *others = (normalized(load(name)) for name in CONFIGS)
    for other in others:
        assert other == first
