"""Progress on stderr for long commands (export, validation, quantize); silent when disabled."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Steps:
    """A step counter with a rich progress bar on stderr; `enabled=False` makes it a no-op."""

    def __init__(self, total: int, enabled: bool = True, title: str = ""):
        self.enabled = enabled and sys.stderr is not None
        self.total, self.title, self.times = total, title, {}
        self._progress = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self._task = self._progress.add_task(title, total=total)
            self._progress.start()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self._progress:
            self._progress.update(self._task, description=f"{self.title}: {name}")
        yield
        self.times[name] = round(time.perf_counter() - start, 3)
        if self._progress:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None
