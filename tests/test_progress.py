"""Progress: live bars on a terminal; timed plain lines when the output is a file (a background run's log)."""

import io

import pytest
from rich.console import Console

from bench.progress import Reporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def file_reporter(clock: Clock, enabled: bool = True) -> tuple[Reporter, io.StringIO]:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, width=60)
    return Reporter(enabled=enabled, console=console, interval_s=60, clock=clock), stream


def test_a_log_file_gets_a_line_per_interval_and_one_at_the_end():
    clock = Clock()
    reporter, stream = file_reporter(clock)
    with reporter, reporter.task("train ann", total=4) as task:
        clock.now = 30
        task.advance(loss=2.0)  # 30 s since the start: no line yet
        clock.now = 61
        task.advance(loss=1.5)  # 61 s: a line; half done in 61 s, so 61 s left
        clock.now = 100
        task.advance(loss=1.25)  # 39 s after the last line: none
        clock.now = 130
        task.advance(loss=1.0)
    assert stream.getvalue().splitlines() == [
        "train ann: 2/4 (50%), 0:01:01 elapsed, 0:01:01 left  loss 1.5",
        "train ann: 4/4 (100%), 0:02:10 elapsed  loss 1",
    ]


def test_a_task_that_fails_still_says_where_it_stopped():
    clock = Clock()
    reporter, stream = file_reporter(clock)
    with pytest.raises(RuntimeError), reporter, reporter.task("curve conversion", total=10) as task:
        clock.now = 5
        task.advance(3)
        raise RuntimeError("out of memory")
    assert stream.getvalue().splitlines() == ["curve conversion: 3/10 (30%), 0:00:05 elapsed, 0:00:12 left"]


def test_quiet_prints_no_progress_but_still_warns():
    clock = Clock()
    reporter, stream = file_reporter(clock, enabled=False)
    with reporter, reporter.task("train ann", total=2) as task:
        clock.now = 1000
        task.advance(2, loss=1.0)
        reporter.log("seed 1 (1 of 2)")
        reporter.warn("direct: failed, its record says why")
    assert stream.getvalue().splitlines() == ["direct: failed, its record says why"]


def test_a_log_line_keeps_the_text_and_drops_the_styles():
    reporter, stream = file_reporter(Clock())
    with reporter:
        reporter.log("[dim]ann: results already in results/x, skipped[/dim]")
    assert stream.getvalue() == "ann: results already in results/x, skipped\n"


def test_a_task_with_nothing_to_do_prints_nothing():
    reporter, stream = file_reporter(Clock())
    with reporter, reporter.task("train ann (cached)", total=0):
        pass
    assert stream.getvalue() == ""
