"""The command line: `spikebench run|report|speed|gradients|depth|methods` (`run_all.py` is
`spikebench run`).

`spikebench run` parses, validates, runs the suite and prints a summary that fits an 80-column
terminal, with the verdict against the published reference where there is one (the full tables
are in the leaderboard). Mistakes a user can make end as one line on stderr and exit status 2;
an interrupted run resumes when the same command is given again.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Callable
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from bench import distributed, report
from bench.api import get_method, list_methods, load_plugins
from bench.config import MethodSpec, RunConfig, load_config
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.progress import Reporter
from bench.records import read_records, store_path
from bench.reference import resolve_reference_dir, verdicts
from bench.report import compact_cell, latest_rows, silent_settings
from bench.runner import run_suite
from bench.studies import depth, gradients, speed

SUMMARY_STEPS = (1, 4, 16, 64, 1000)
SUMMARY_WIDTH = 80


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="spikebench run", description="Measure accuracy against latency T for every spiking method on one dataset."
    )
    parser.add_argument("--config", help="YAML config, a path or a shipped config's name (default: default)")
    parser.add_argument("--dataset", help="dataset name: tiny-imagenette, cifar10, cifar100, imagenette, folder:PATH")
    parser.add_argument("--methods", help="comma-separated method names or labels (wildcards allowed), e.g. ann,direct")
    parser.add_argument("--data-root", help="folder that holds the dataset")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--results-dir", help="where records and leaderboards go (default: runs; `results` publishes a reference)"
    )
    parser.add_argument(
        "--reference-dir", help="published references to compare with (default: results; empty for none)"
    )
    parser.add_argument("--epochs", type=int, help="training epochs for every method (train.epochs)")
    parser.add_argument(
        "--seeds", help="comma-separated seeds, one full run each; the leaderboard shows mean ± std (seed)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set eval.time_steps=[1,10,100]",
    )
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE", help="import MODULE so that it can register methods"
    )
    parser.add_argument("--rerun", action="store_true", help="run settings again even when their records exist")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms, no TF32, no cuDNN autotuning: repeatable CUDA runs, slower (deterministic)",
    )
    parser.add_argument("--list-methods", action="store_true", help="list registered methods and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.set)
    for flag, key in (
        ("dataset", "data.name"),
        ("data_root", "data.root"),
        ("device", "device"),
        ("epochs", "train.epochs"),
        ("results_dir", "results_dir"),
        ("reference_dir", "reference_dir"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.seeds is not None:
        overrides.append(f"seed=[{args.seeds}]")
    if getattr(args, "deterministic", False):
        overrides.append("deterministic=true")
    config = load_config(args.config or "default", overrides)
    config.plugins = list(config.plugins) + list(args.plugin)
    if args.methods is not None:
        load_plugins(config.plugins)
        config.methods = select_methods(config.methods, args.methods.split(","))
        if not config.methods:
            raise UserError(
                f"--methods {args.methods!r} selects no method; give names or labels, e.g. --methods ann,direct"
            )
    results = Path(config.results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"results folder {results} is a file; pass a folder with --results-dir")
    return config


def select_methods(configured: list[MethodSpec], patterns: list[str]) -> list[MethodSpec]:
    """Configured settings whose label matches, else whose method name matches; a registered name not
    configured is added with defaults."""
    chosen: list[MethodSpec] = []
    for pattern in (p.strip() for p in patterns if p.strip()):
        # A row's label first: `conversion` is that row, not also `conversion-improved` (which
        # `conversion*` selects); a method name selects its rows when no label matches.
        matches = [s for s in configured if fnmatch.fnmatch(s.display_name, pattern)] or [
            s for s in configured if fnmatch.fnmatch(s.name, pattern)
        ]
        if not matches:
            matches = [MethodSpec(name) for name in list_methods(pattern)]
        if not matches:
            get_method(pattern)  # raises the error that lists the registered methods
        chosen += [spec for spec in matches if spec not in chosen]
    return chosen


def print_methods(console: Console) -> None:
    """Each method with its paper, the reference code its default follows, and what still differs."""
    for name in list_methods():
        entry = get_method(name)
        console.print(f"[bold]{name}[/bold] ({entry.family}) {entry.paper}", highlight=False)
        console.print(f"  {entry.description}", highlight=False)
        if entry.reference:
            console.print(f"  reference implementation: {entry.reference}", highlight=False)
            console.print(f"  default differs from it in: {entry.departures or 'nothing'}", highlight=False)


def print_summary(console: Console, config: RunConfig, leaderboard: Path) -> None:
    """Top-1 at a few T, one line per setting, and the verdict against the reference: narrow enough
    for an 80-column terminal; the leaderboard has every T and number."""
    rows = latest_rows(read_records(store_path(config.results_dir, config.data.name)))
    labels = [spec.display_name for spec in config.methods]
    # This config's rows: of its architecture, or of this very config (a plugin's own network).
    this_config = rows["config_hash"] == config.section_hash("data", "model", "train", "eval")
    rows = rows[rows["label"].isin(labels) & ((rows["architecture"] == config.model.name) | this_config)]
    grid = [t for t in config.eval.time_steps if t in SUMMARY_STEPS or t == config.eval.time_steps[-1]]
    grid = grid[-len(SUMMARY_STEPS) :]
    seeds = "std over seeds" if (rows["seeds"] > 1).any() else "95 % interval"
    console.print(f"top-1 (%) on {config.data.name}, {config.model.name}; ± {seeds}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("method", no_wrap=True, max_width=16, overflow="ellipsis")
    for t in grid:
        table.add_column(f"T={t}", justify="right", no_wrap=True)
    for label, group in rows.groupby("label", sort=False):
        if group["status"].iloc[0] != "ok":
            table.add_row(label, "failed", *[""] * (len(grid) - 1))
            continue
        by_t = {int(row["time_steps"]): row for _, row in group.iterrows()}
        table.add_row(label, *[compact_cell(by_t[t]) if t in by_t else "" for t in grid])
    console.print(table)
    silent = silent_settings(rows)
    if silent:
        console.print(f"[yellow]silent (no spike reached the last neuron layer): {', '.join(silent)}[/yellow]")
    reference_dir = resolve_reference_dir(config.reference_dir, config.results_dir)
    found = verdicts(rows, reference_dir)
    if found:
        console.print(f"reference: {found[0].reference}; gap in points at the worst T")
        check = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("method", "reference", "verdict"):
            check.add_column(column, no_wrap=True)
        for verdict in found:
            seeds = f"{verdict.reference_seeds} seed" + ("s" if verdict.reference_seeds > 1 else "")
            theirs = f"{100 * verdict.theirs:.1f} ({seeds})"
            word = "reproduced" if verdict.reproduced else "[red]NOT reproduced[/red]"
            gap = f"{100 * verdict.gap:+.1f} at T={verdict.time_steps}, allowed ±{100 * verdict.allowed:.1f}"
            check.add_row(verdict.label, theirs, f"{word}: {gap}")
        console.print(check)
    elif reference_dir is not None:
        console.print(f"no reference in {reference_dir} has these settings (its README.md lists the ones there are)")
    console.print(f"leaderboard: {leaderboard}")


def main(argv: list[str] | None = None) -> int:
    """`spikebench run` (and `python run_all.py`)."""
    return exit_status(lambda: _run(argv))


def _commands() -> dict[str, tuple[str, Callable[[list[str]], int]]]:
    return {
        "run": ("train and measure every configured method; write records and the leaderboard", main),
        "report": ("rebuild leaderboards and plots from records", report.main),
        "speed": ("time and size a spiking network against its ANN", speed.main),
        "gradients": ("the gradient-flow study of surrogate-gradient training", gradients.main),
        "depth": ("the depth study: direct training's accuracy and gradient flow against depth", depth.main),
        "methods": ("list the registered methods", lambda rest: main(["--list-methods", *rest])),
        "export": ("write a row's spiking network as a NIR file and check it is exact", _ecosystem("export_main")),
        "neurobench": ("NeuroBench's own metrics for each row, beside the suite's", _ecosystem("neurobench_main")),
    }


def _ecosystem(command: str) -> Callable[[list[str]], int]:
    """A command of `bench.ecosystem.commands`, imported when it runs (it imports the cli itself)."""

    def run(rest: list[str]) -> int:
        from bench.ecosystem import commands

        return getattr(commands, command)(rest)

    return run


def spikebench(argv: list[str] | None = None) -> int:
    """The `spikebench` command: `spikebench <command> [options]`; each command's errors are one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, commands))
        lines = [f"  {name:<{width}}  {text}" for name, (text, _) in commands.items()]
        print("usage: spikebench <command> [options]; spikebench <command> --help for its options\n")
        print("\n".join(["commands:", *lines]))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        return exit_status(lambda: _unknown(name, commands))
    return commands[name][1](rest)


def _unknown(name: str, commands: dict) -> int:
    raise UserError(f"unknown command {name!r}; choose one of {', '.join(commands)} (spikebench --help)")


def _run(argv: list[str] | None) -> int:
    console = Console()
    args = build_parser().parse_args(argv)
    if args.list_methods:
        load_plugins(args.plugin)
        print_methods(console)
        return 0
    config = config_from_args(args)
    # Under torchrun only the main process shows progress and the summary.
    with Reporter(enabled=not args.quiet and distributed.is_main()) as reporter:
        leaderboard = run_suite(config, reporter, rerun=args.rerun)
    if distributed.is_main():
        print_summary(console, config, leaderboard)
    return 0
