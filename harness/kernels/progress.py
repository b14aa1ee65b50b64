"""How kernel builds show what they are doing: a status task per step, log lines and the compile progress bar.

On a terminal that is a rich progress display.  Elsewhere (CI logs, pipes) a live display shows nothing for
minutes, so the Reporter prints plain lines instead: each step as it starts, and while compiling one line
about every PLAIN_INTERVAL_S seconds with the objects compiled of the expected total and the time elapsed.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console

PLAIN_INTERVAL_S = 30.0


class _PlainTask:
    def __init__(self, text: str, total: int | None):
        self.text = text
        self.total = total
        self.completed = 0
        self.started = time.monotonic()
        self.last_line = self.started


class Reporter:
    """Status lines and the compile progress bar, on the caller's rich Progress or our own (stderr)."""

    def __init__(self, progress=None, quiet: bool = False, console: Console | None = None,
                 interval_s: float = PLAIN_INTERVAL_S):
        self.progress = progress
        self.own = None
        self.quiet = quiet
        self.interval_s = interval_s
        # Plain lines go here when there is no terminal to draw a live display on.
        self.plain: Console | None = None
        self._console = console

    def __enter__(self):
        if self.quiet:
            return self
        console = self.progress.console if self.progress is not None else (self._console or Console(stderr=True))
        if not console.is_terminal:
            self.plain = console
            return self
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.own = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
            self.own.__enter__()
            self.progress = self.own
        return self

    def __exit__(self, *exc):
        if self.own is not None:
            self.own.__exit__(*exc)

    def _say(self, text: str) -> None:
        if self.plain is not None:
            self.plain.print(text, markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def status(self, text: str):
        """An indeterminate task shown while a step runs (removed after)."""
        if self.plain is not None:
            self._say(f"kernel build: {text}")
        if self.progress is None or self.plain is not None:
            yield
            return
        task = self.progress.add_task(text, total=None)
        try:
            yield
        finally:
            self.progress.remove_task(task)

    def log(self, text: str):
        if self.plain is not None:
            self._say(text)
        elif self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)

    def add(self, text: str, total: int):
        if self.plain is not None:
            self._say(f"kernel build: {text}")
            return _PlainTask(text, total)
        return self.progress.add_task(text, total=total) if self.progress is not None else None

    def update(self, task, **kw):
        if isinstance(task, _PlainTask):
            task.total = kw.get("total", task.total)
            task.completed = kw.get("completed", task.completed)
            now = time.monotonic()
            if now - task.last_line >= self.interval_s:
                task.last_line = now
                elapsed = int(now - task.started)
                self._say(f"kernel build: {task.text}: {task.completed} of {task.total} objects, "
                          f"{elapsed // 60}m{elapsed % 60:02d}s elapsed")
        elif task is not None and self.progress is not None:
            self.progress.update(task, **kw)
