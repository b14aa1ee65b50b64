"""Repetitions from a post-boot snapshot (`repetitions_from: snapshot`): the first repetition of a kernel boots
and saves the booted guest (QEMU migration to a file); every later one starts a fresh QEMU that loads it
(`-incoming`, into the QEMU's own RAM) instead of booting.  Repetitions that run at the same time (--jobs)
wait for the save; when it failed they boot as usual."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from harness.machine.vm import run_dir_root

FROM_BOOT, FROM_SNAPSHOT = "boot", "snapshot"
REPETITIONS_FROM = (FROM_BOOT, FROM_SNAPSHOT)


@dataclass
class BootFacts:
    """What the saving repetition learnt at boot that a loaded guest does not say again."""

    guest_release: str | None
    clocksource: str | None
    zeroing: object  # harness.guest.zeroing.Plan: the counters set up in the saved guest


@dataclass
class SavedBoot:
    """The booted guest of one kernel, in one file."""

    path: Path
    facts: BootFacts | None = None  # set once the save succeeded
    _claimed: bool = False
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the one repetition that is to boot and save; the others call wait()."""
        with self._lock:
            first, self._claimed = not self._claimed, True
            return first

    def saved(self, facts: BootFacts) -> None:
        self.facts = facts
        self._done.set()

    def failed(self) -> None:
        self._done.set()

    def wait(self) -> BootFacts | None:
        """The saved guest's facts once the save finished; None when it failed (then boot)."""
        self._done.wait()
        return self.facts


class SavedBoots:
    """One SavedBoot per kernel of a run, in a private directory removed when the run ends."""

    def __init__(self) -> None:
        # named like a VM's run dir, so a harness killed with SIGKILL has it swept by the next run
        self.dir = Path(tempfile.mkdtemp(prefix=f"vm-{os.getpid()}-saved-", dir=run_dir_root()))
        self._boots: dict[int, SavedBoot] = {}

    def for_kernel(self, index: int) -> SavedBoot:
        return self._boots.setdefault(index, SavedBoot(self.dir / f"kernel{index}.state"))

    def __enter__(self) -> SavedBoots:
        return self

    def __exit__(self, *exc) -> None:
        for boot in self._boots.values():
            boot.failed()  # nobody waits for ever on a run that is ending
        shutil.rmtree(self.dir, ignore_errors=True)
