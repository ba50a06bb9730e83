"""Progress display for long work: rich bars on a terminal, timed lines in a log, silence in tests.

with reporter.task("train ann", total=steps) as task:
    task.advance(loss=0.7)

On a terminal the tasks are live bars. Written to a file or a pipe (`nohup python run_all.py >
run.log`), a bar would show nothing until the run ends, so each task prints a plain line instead,
at most once every `interval_s` seconds and once when it ends: how far it is, the time spent and
left, and its latest fields (a training loss, say).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _status(fields: dict[str, float | str]) -> str:
    return "  ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in fields.items()
    )


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class _Task:
    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, steps: int = 1, **fields: float | str) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task_id, advance=steps, status=_status(fields))


class _LineTask:
    """A task that prints a line now and then, for consoles that are not terminals."""

    def __init__(
        self, console: Console, description: str, total: int, interval_s: float, clock: Callable[[], float]
    ) -> None:
        self._console, self._description, self._total = console, description, total
        self._interval_s, self._clock = interval_s, clock
        self._started = self._last_line = clock()
        self._done = 0
        self._fields: dict[str, float | str] = {}
        self._shown: int | None = None  # the count the last line showed

    def advance(self, steps: int = 1, **fields: float | str) -> None:
        self._done += steps
        self._fields = fields  # formatted only when a line is printed, not every step
        if self._clock() - self._last_line >= self._interval_s:
            self.line()

    def line(self) -> None:
        if self._shown == self._done or not self._total:  # nothing new, or nothing to do (a cached network)
            return
        self._shown = self._done
        self._last_line = now = self._clock()
        elapsed = now - self._started
        share = self._done / self._total
        left = f", {_duration(elapsed * (1 - share) / share)} left" if 0 < share < 1 else ""
        status = f"  {_status(self._fields)}" if self._fields else ""
        self._console.print(
            f"{self._description}: {self._done}/{self._total} ({share:.0%}), "
            f"{_duration(elapsed)} elapsed{left}{status}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )


class Reporter:
    """Owns one rich Progress (or, off a terminal, timed lines); `enabled=False` makes every task a no-op."""

    def __init__(
        self,
        enabled: bool = True,
        console: Console | None = None,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console(stderr=True)
        self._enabled = enabled
        self._lines = enabled and not self.console.is_terminal
        self._interval_s, self._clock = interval_s, clock
        self._progress = None
        if enabled and not self._lines:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
            )

    def __enter__(self) -> Reporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[_Task | _LineTask]:
        if self._lines:
            task = _LineTask(self.console, description, total, self._interval_s, self._clock)
            try:
                yield task
            finally:
                task.line()  # the last line says where it ended, also when it ended early
            return
        if self._progress is None:
            yield _Task(None, None)
            return
        task_id = self._progress.add_task(description, total=total, status="")
        try:
            yield _Task(self._progress, task_id)
        finally:
            self._progress.update(task_id, visible=True)

    def log(self, message: str) -> None:
        """A line of progress, shown only with progress on."""
        if self._enabled:
            self.console.print(message)

    def warn(self, message: str) -> None:
        """A line the user must see (a record set aside, a method that failed), on stderr even when quiet."""
        self.console.print(message, soft_wrap=True)  # one line, whatever the width: logs and greps read it whole


QUIET = Reporter(enabled=False)
