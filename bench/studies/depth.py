"""Depth study of direct training: `python -m bench.studies.depth --help`.

Tests the seed paper's claims (b)-(d) where they matter, in accuracy: surrogate-gradient training
of deeper networks suffers from exploding or vanishing gradients unless the surrogate is tuned,
and batch norm on the input currents helps. For every architecture of `architectures` (CIFAR
ResNets of growing depth), the suite trains the configured `direct` settings with one fixed epoch
budget (`suite:`, a run config of its own: data, train, eval, methods) and reads their accuracy;
the gradient-flow study then measures, from the same initialization, the first-to-last layer
gradient ratio of each setting (`gradients:`, the study's own few steps). Records go to
`<results_dir>/depth/<dataset>/records.jsonl` (one leaderboard holding every depth) and
`<results_dir>/depth/gradients/<dataset>-<architecture>/`; the report `<results_dir>/depth/report.md`
and its plot (accuracy against depth) are made from those records alone
(`bench.studies.depth_report`), and the run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import RunConfig, apply_override, build_dataclass, load_config, read_yaml, shipped_configs
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.progress import Reporter
from bench.runner import run_suite
from bench.studies.depth_report import write_depth_report
from bench.studies.gradients import StudyConfig, SurrogateSetting, SweepConfig, run_study

DEFAULT_CONFIG = shipped_configs() / "depth_study.yaml"


@dataclass
class DepthStudyConfig:
    """The study's config: the architectures, the suite run at each (its `model.name` and
    `results_dir` are set by the study), and the gradient study's steps and batch."""

    architectures: list[str] = field(default_factory=lambda: ["cifar_resnet8", "cifar_resnet20"])
    suite: dict[str, Any] = field(default_factory=dict)
    gradient_steps: int = 4
    gradient_train_subset: int = 512
    gradient_batch_size: int = 32
    results_dir: str = "runs"  # `--set results_dir=results` publishes the study

    def __post_init__(self) -> None:
        if not self.architectures:
            raise UserError("architectures must list at least one architecture")
        if self.gradient_steps < 1:
            raise UserError(f"gradient_steps must be at least 1, got {self.gradient_steps}")
        for architecture in self.architectures:
            self.suite_config(architecture)  # a bad suite value fails now, before any work

    @property
    def study_dir(self) -> Path:
        return Path(self.results_dir) / "depth"

    def suite_config(self, architecture: str) -> RunConfig:
        values = _flatten(self.suite)
        values += [f"model.name={architecture}", f"results_dir={self.study_dir}", "reference_dir="]
        return load_config(None, values)

    def gradient_config(self, architecture: str) -> StudyConfig:
        """The gradient study of the same `direct` settings, from the suite's data and options."""
        suite = self.suite_config(architecture)
        settings, direct = [], {}
        for spec in suite.methods:
            if spec.name != "direct":
                continue
            options = dict(spec.options)
            settings.append(
                SurrogateSetting(
                    surrogate=options.pop("surrogate", "triangular"),
                    width=float(options.pop("surrogate_width", 1.0)),
                    height=float(options.pop("surrogate_height", 1.0)),
                    batch_norm=bool(options.pop("batch_norm", True)),
                )
            )
            direct = {**options, **direct}
        data = dataclasses.replace(
            suite.data,
            train_subset=self.gradient_train_subset,
            batch_size=self.gradient_batch_size,
            augment=False,
            test_subset=None,
        )
        return StudyConfig(
            data=data,
            model=suite.model,
            train=dataclasses.replace(suite.train, schedule="constant", weight_decay=0.0),
            direct=direct,
            sweep=SweepConfig(shapes=[], widths=[], heights=[], batch_norm=[]),
            settings=settings,
            steps=self.gradient_steps,
            seed=suite.seeds[0],
            device=suite.device if suite.device != "auto" else "cpu",
            results_dir=str(self.study_dir),
        )


def _flatten(values: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping as `key.path=value` overrides (lists and scalars as YAML flow text)."""
    overrides = []
    for key, value in values.items():
        if isinstance(value, dict) and key != "options":
            overrides += _flatten(value, f"{prefix}{key}.")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            overrides.append(f"{prefix}{key}={text.removesuffix('...').strip()}")
    return overrides


def load_depth_config(path: str | Path | None, overrides: list[str] = ()) -> DepthStudyConfig:
    values = read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(values, override)
    return build_dataclass(DepthStudyConfig, values, "")


def run_depth_study(config: DepthStudyConfig, reporter, rerun: bool = False, command: str = "") -> Path:
    for architecture in config.architectures:
        reporter.log(f"depth study: {architecture}")
        run_suite(config.suite_config(architecture), reporter, rerun=rerun, summaries=False)
        run_study(config.gradient_config(architecture), reporter, rerun=rerun, command=command)
    return write_depth_report(config.study_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m bench.studies.depth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML study config (default: configs/depth_study.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--rerun", action="store_true", help="run settings again even when their records exist")
    parser.add_argument("--report-only", action="store_true", help="regenerate the report from the records")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _run(argv))


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load_depth_config(path, args.set)
    if args.report_only:
        if not (config.study_dir / "report.md").parent.is_dir():
            raise UserError(f"no depth-study records in {config.study_dir}; run python -m bench.studies.depth first")
        print(write_depth_report(config.study_dir))
        return 0
    command = shlex.join(["python", "-m", "bench.studies.depth", *(sys.argv[1:] if argv is None else argv)])
    with Reporter(enabled=not args.quiet) as reporter:
        report = run_depth_study(config, reporter, rerun=args.rerun, command=command)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
