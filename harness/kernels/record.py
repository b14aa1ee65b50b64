"""What a bundle records about a kernel (manifest ``kernels[]``), one typed model from where the kernel is found
or built (its build.json keeps the same record) to the bundle and everything that reads it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer
from pydantic.functional_serializers import SerializerFunctionWrapHandler


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=True)


class PatchRecord(Record):
    file: str
    sha256: str | None = None


class SeriesRecord(Record):
    """A patch series as applied: every patch in order; `of` is how many the whole series has (SERIES@N)."""

    name: str
    patches: list[PatchRecord] = []
    of: int | None = None


class KernelRecord(Record):
    """One kernel of the run (manifest ``kernels[]``); fields not known for a kernel are null."""

    spec: str | None = None  # as given on the command line or in the scenario
    slug: str | None = None  # its directory name in the bundle
    version: str | None = None  # kernel release
    sha256: str | None = None  # of the bzImage
    cache_key: str | None = None  # the build cache entry (built kernels)
    config: str | None = None  # path of the .config it was built with
    config_fragment_sha256: str | None = None
    series: list[SeriesRecord] = []
    # "vmstat", "trace", "vmstat+trace" or "unavailable" ("kprobe" in older bundles); null until a boot found out
    zeroing_counters: str | None = None
    # how each zeroing.* metric was counted, and why the unavailable ones could not be (harness.guest.zeroing)
    zeroing: dict[str, Any] | None = None
    guest_release: str | None = None  # `uname -r` in the guest
    clocksource: str | None = None  # the guest's current clocksource (kvm-clock on KVM)
    # Only some kernels (and bundles) have these; written only when set.
    package: str | None = None  # stock: the Debian package
    boot: str | None = None  # stock: how QEMU boots it (the PVH vmlinux or the bzImage)
    base: dict[str, Any] | None = None  # built: the source it was built from (Debian package, or a tree)
    flavours: list[dict[str, Any]] | None = None  # built with %FLAVOURs: name, fragment sha256, boot parameters
    stack: str | None = None  # the spec started with this named stack (kernel_patches/stacks.yaml)
    expanded: str | None = None  # and stood for this spec
    reused_from: str | None = None  # built: the cache key of the build below, whose image this is (kernels/reuse)

    def zeroing_summary(self) -> str | None:
        """One line: which method counted the zeroing.* metrics, the mem auto-init state, what could not be."""
        if self.zeroing_counters is None:
            return None
        z = self.zeroing or {}
        text = self.zeroing_counters
        state = [f"{k} {'on' if z[k] else 'off'}" for k in ("init_on_alloc", "init_on_free") if z.get(k) is not None]
        if state:
            text += f" ({', '.join(state)})"
        unavailable = z.get("unavailable") or {}
        if unavailable:
            text += "; unavailable: " + "; ".join(f"{k.removeprefix('zeroing.')}: {v}" for k, v in unavailable.items())
        return text

    @model_serializer(mode="wrap")
    def _omit_unset_optionals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in ("package", "boot", "base", "flavours", "zeroing", "stack", "expanded", "reused_from"):
            if data.get(key) is None:
                data.pop(key, None)
        return data
