"""The stock kernel's boot modules: each wanted module with its dependencies, dependencies first, once."""

from __future__ import annotations

import subprocess

import pytest

from harness.errors import HarnessError
from harness.kernels import stock

DEPENDS = {"virtio_balloon": "virtio_ring,virtio", "virtio_net": "net_failover,virtio_ring,virtio",
           "net_failover": "failover", "failover": "", "virtio_ring": "virtio", "virtio": "", "virtio-rng": ""}


@pytest.fixture
def moddir(tmp_path, monkeypatch):
    for name in DEPENDS:
        sub = tmp_path / "kernel" / ("drivers" if "virtio" in name else "net")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{name}.ko.xz").write_bytes(b"")

    def modinfo(cmd, **kw):
        assert cmd[:3] == ["modinfo", "-F", "depends"]
        return subprocess.CompletedProcess(cmd, 0, DEPENDS[str(cmd[3]).rsplit("/", 1)[1].split(".ko")[0]] + "\n", "")

    monkeypatch.setattr(stock, "run_command", modinfo)
    return tmp_path


def names(paths):
    return [p.name.split(".ko")[0] for p in paths]


def test_dependencies_come_first_and_only_once(moddir):
    order = names(stock._module_closure(moddir, ["virtio_balloon", "virtio_net", "virtio-rng"]))
    assert order == ["virtio", "virtio_ring", "virtio_balloon", "failover", "net_failover", "virtio_net", "virtio-rng"]


def test_dashes_and_underscores_name_the_same_module(moddir):
    assert names(stock._module_closure(moddir, ["virtio_rng"])) == ["virtio-rng"]


def test_a_missing_module_is_named(moddir):
    with pytest.raises(HarnessError, match="stock kernel has no module virtio_mem"):
        stock._module_closure(moddir, ["virtio_mem"])


def test_lanes_share_no_module_and_keep_dependency_order(moddir):
    order = stock._module_closure(moddir, ["virtio_balloon", "virtio_net", "virtio-rng"])
    # virtio_net needs both virtio (lane of virtio_balloon) and net_failover: the two lanes merge.
    assert [names(lane) for lane in stock.boot_module_lanes(order)] == [
        ["virtio", "virtio_ring", "virtio_balloon", "failover", "net_failover", "virtio_net"], ["virtio-rng"]]


def test_modules_with_builtin_dependencies_load_side_by_side(moddir):
    # The stock cloud kernel has virtio and virtio_ring built in: balloon, the net chain and rng are three lanes.
    paths = {p.name.split(".ko")[0]: p for p in moddir.rglob("*.ko*")}
    order = [paths[n] for n in ("virtio_balloon", "failover", "net_failover", "virtio_net", "virtio-rng")]
    lanes = stock.boot_module_lanes(order)
    assert [names(lane) for lane in lanes] == [["virtio_balloon"], ["failover", "net_failover", "virtio_net"],
                                               ["virtio-rng"]]
