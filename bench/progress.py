"""Progress display for long work: rich bars on a terminal, silence in tests.

with reporter.task("train ann", total=steps) as task:
    task.advance(loss=0.7)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Task:
    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, steps: int = 1, **fields: float | str) -> None:
        if self._progress is None:
            return
        status = "  ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in fields.items()
        )
        self._progress.update(self._task_id, advance=steps, status=status)


class Reporter:
    """Owns one rich Progress; `enabled=False` makes every task a no-op."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = None
        if enabled:
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
    def task(self, description: str, total: int) -> Iterator[_Task]:
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
        if self._progress is not None:
            self._progress.console.print(message)

    def warn(self, message: str) -> None:
        """A line the user must see (a record set aside, a method that failed), on stderr even when quiet."""
        console = self._progress.console if self._progress is not None else self.console
        console.print(message, soft_wrap=True)  # one line, whatever the width: logs and greps read it whole


QUIET = Reporter(enabled=False)
