"""Progress on stderr for long commands (export, validation, quantize, compare); silent when disabled.

On a terminal: a rich bar. Otherwise (a log, CI, `make demo | tee`): a plain line when a step starts, at most one
every PLAIN_EVERY seconds so a long run still shows it is alive without flooding the log, and one at the end."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

PLAIN_EVERY = 10.0  # seconds between plain progress lines


class Steps:
    """A step counter with a rich progress bar (or plain lines) on stderr; `enabled=False` makes it a no-op."""

    def __init__(self, total: int, enabled: bool = True, title: str = ""):
        self.enabled = enabled and sys.stderr is not None
        self.total, self.title, self.times = total, title, {}
        self.done = 0
        self._progress = None
        self._plain = self.enabled and not sys.stderr.isatty()
        self._start = self._last_line = time.perf_counter()
        if self.enabled and not self._plain:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self._task = self._progress.add_task(title, total=total)
            self._progress.start()

    def _line(self, text: str) -> None:
        self._last_line = time.perf_counter()
        print(f"{self.title}: {text} [{self.done}/{self.total}, {self._last_line - self._start:.0f} s]",
              file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self._progress:
            self._progress.update(self._task, description=f"{self.title}: {name}")
        elif self._plain and (self.done == 0 or start - self._last_line >= PLAIN_EVERY):
            self._line(name)
        yield
        self.times[name] = round(time.perf_counter() - start, 3)
        self.done += 1
        if self._progress:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None
        elif self._plain and self.done:
            self._plain = False
            self._line("done")
