"""How kernel builds show what they are doing: a status task per step, log lines and the compile progress bar."""

from __future__ import annotations

import contextlib


class Reporter:
    """Status lines and the compile progress bar, on the caller's rich Progress or our own (stderr)."""

    def __init__(self, progress=None, quiet: bool = False):
        self.progress = progress
        self.own = None
        self.quiet = quiet

    def __enter__(self):
        if self.progress is None and not self.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.own = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=False)
            self.own.__enter__()
            self.progress = self.own
        return self

    def __exit__(self, *exc):
        if self.own is not None:
            self.own.__exit__(*exc)

    @contextlib.contextmanager
    def status(self, text: str):
        """An indeterminate task shown while a step runs (removed after)."""
        if self.progress is None:
            yield
            return
        task = self.progress.add_task(text, total=None)
        try:
            yield
        finally:
            self.progress.remove_task(task)

    def log(self, text: str):
        if self.progress is not None:
            self.progress.console.log(text)

    def add(self, text: str, total: int):
        return self.progress.add_task(text, total=total) if self.progress is not None else None

    def update(self, task, **kw):
        if task is not None and self.progress is not None:
            self.progress.update(task, **kw)
