"""Gradient-flow study of surrogate-gradient training: `python -m bench.studies.gradients --help`.

For one dataset and architecture, builds the `direct` method's spiking network once per setting
(surrogate shape, width, height, BN on the input currents on/off), trains it for a fixed number
of steps from the same initialization on the same batches, and records per step the gradient
norm of every conv/linear weight in forward order, and for one neuron layer the norm of the
gradient reaching its input current at each time step (the flattened `[T*B, ...]` current viewed
as `[T, B, ...]`). One JSON line per setting goes to
`runs/gradients/<dataset>-<architecture>/records.jsonl` (`--set results_dir=results` publishes
it beside the reference results); the report and plots beside it are
made from those records alone (`bench.studies.gradient_report`).

A setting is flagged from the ratio of the first layer's gradient norm to the last layer's, each
averaged over the steps: `exploding` above `exploding_ratio` (default 1e2), or when a gradient or
the loss became non-finite (status `diverged`, training stopped there); `vanishing` below
`vanishing_ratio` (default 1e-2); `stable` in between; `silent` when no spike reaches the last
layer, so that its weight gradient is zero and the ratio undefined. The ANN of the same
ResNet-20, with the same batches and steps, has a ratio of 0.55, so two decades either way is a
failure of the gradient to travel through depth and time, not an effect of layer sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.api import get_method
from bench.architectures import build_architecture
from bench.config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_override,
    build_dataclass,
    hash_of,
    read_yaml,
    shipped_configs,
)
from bench.data import load_dataset
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.progress import QUIET, Reporter
from bench.records import Provenance, append_records, dataset_slug, read_records
from bench.runner import resolve_device
from bench.spiking import SpikingNeuron
from bench.studies.gradient_report import write_report
from bench.training import build_optimizer

DEFAULT_CONFIG = shipped_configs() / "gradients.yaml"


@dataclass
class SurrogateSetting:
    """One setting of the study: the surrogate and whether BN normalizes the input currents."""

    surrogate: str = "triangular"
    width: float = 1.0
    height: float = 1.0
    batch_norm: bool = True

    @property
    def label(self) -> str:
        return f"{self.surrogate} w={self.width:g} h={self.height:g} BN {'on' if self.batch_norm else 'off'}"


@dataclass
class SweepConfig:
    """A grid: every shape x width x height x batch_norm combination is one setting."""

    shapes: list[str] = field(default_factory=lambda: ["rectangular", "triangular", "arctan"])
    widths: list[float] = field(default_factory=lambda: [0.05, 0.5, 1.0, 4.0])
    heights: list[float] = field(default_factory=lambda: [1.0])
    batch_norm: list[bool] = field(default_factory=lambda: [True, False])

    def settings(self) -> list[SurrogateSetting]:
        grid = itertools.product(self.batch_norm, self.shapes, self.widths, self.heights)
        return [SurrogateSetting(shape, width, height, bn) for bn, shape, width, height in grid]


@dataclass
class StudyConfig:
    """The study's config file. `direct` (options of the `direct` method) fixes the neuron and T;
    the sweep sets the surrogate and BN."""

    data: DataConfig = field(default_factory=lambda: DataConfig(train_subset=512, batch_size=32, augment=False))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="cifar_resnet20"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=0.1, weight_decay=0.0, schedule="constant"))
    direct: dict[str, Any] = field(default_factory=dict)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    settings: list[SurrogateSetting] = field(default_factory=list)
    steps: int = 4
    time_layer: str = "first"
    exploding_ratio: float = 100.0
    vanishing_ratio: float = 0.01
    seed: int = 0
    device: str = "cpu"
    results_dir: str = "runs"  # `--set results_dir=results` publishes the study

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UserError(f"steps must be at least 1, got {self.steps}")
        if not 0 < self.vanishing_ratio < 1 < self.exploding_ratio:
            raise UserError("the thresholds need 0 < vanishing_ratio < 1 < exploding_ratio")
        for setting in self.all_settings():
            self.direct_options(setting)  # a bad option, shape or width fails now

    def direct_options(self, setting: SurrogateSetting | None = None):
        """The `direct` method's validated options, with a setting's surrogate and BN if given."""
        values = {**self.direct, **(_option_overrides(setting) if setting is not None else {})}
        return get_method("direct").make_options(values, "direct")

    def all_settings(self) -> list[SurrogateSetting]:
        settings = self.sweep.settings() + list(self.settings)
        return list({setting.label: setting for setting in settings}.values())

    def study_dir(self) -> Path:
        return Path(self.results_dir) / "gradients" / f"{dataset_slug(self.data.name)}-{self.model.name}"


def _option_overrides(setting: SurrogateSetting) -> dict[str, Any]:
    return dict(
        surrogate=setting.surrogate,
        surrogate_width=setting.width,
        surrogate_height=setting.height,
        batch_norm=setting.batch_norm,
    )


def load_study_config(path: str | Path | None, overrides: list[str] = ()) -> StudyConfig:
    values = read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(values, override)
    return build_dataclass(StudyConfig, values, "")


def classify(ratio: float | None, exploding_ratio: float, vanishing_ratio: float, finite: bool = True) -> str:
    """The flag of a setting from its first/last gradient-norm ratio (None: the last layer got none)."""
    if not finite:
        return "exploding"
    if ratio is None:
        return "silent"
    if ratio > exploding_ratio:
        return "exploding"
    return "vanishing" if ratio < vanishing_ratio else "stable"


# --- Measuring one setting --------------------------------------------------------------------


class GradientProbe:
    """Hooks on a spiking network: weight layers in forward order, one neuron's input grads per t,
    and the firing rate of every neuron layer in the first forward (spikes per neuron per step)."""

    def __init__(self, model: nn.Module, time_layer: str, time_steps: int) -> None:
        self.time_steps = time_steps
        self.batch_size = 0  # of the batch being run, set by the caller
        self.layer_order: list[str] = []
        self.firing_rates: dict[str, float] = {}
        self.time_grads: torch.Tensor | None = None
        weighted = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))}
        self.modules = weighted
        self._handles = [m.register_forward_hook(self._order_hook(name)) for name, m in weighted.items()]
        for name, neuron in model.named_modules():
            if isinstance(neuron, SpikingNeuron):
                self._handles.append(neuron.register_forward_hook(self._rate_hook(name)))
        neuron_name, neuron = _pick_neuron(model, time_layer)
        self.time_layer = neuron_name
        self._handles.append(neuron.register_forward_pre_hook(self._time_hook))

    def _rate_hook(self, name: str):
        def record(module, inputs, spikes):
            self.firing_rates.setdefault(name, spikes.detach().float().mean().item())

        return record

    def _order_hook(self, name: str):
        def record(module, inputs, output):
            if name not in self.layer_order:
                self.layer_order.append(name)

        return record

    def _time_hook(self, module, inputs):
        current = inputs[0]
        if current.shape[0] != self.time_steps * self.batch_size:
            raise RuntimeError(
                f"{self.time_layer} got {current.shape[0]} rows, not T*B: the study needs per-step currents"
            )
        if current.requires_grad:

            def store(grad: torch.Tensor) -> None:
                self.time_grads = grad.detach().unflatten(0, (self.time_steps, -1)).flatten(1).norm(dim=1)

            current.register_hook(store)

    def weight_grad_norms(self) -> list[float]:
        norms = []
        for name in self.layer_order:
            grad = self.modules[name].weight.grad
            norms.append(0.0 if grad is None else grad.detach().norm().item())
        return norms

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _pick_neuron(model: nn.Module, time_layer: str) -> tuple[str, nn.Module]:
    neurons = {name: m for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}
    if time_layer == "first":
        return next(iter(neurons.items()))
    if time_layer not in neurons:
        raise UserError(f"time_layer {time_layer!r} is not a neuron layer; choose first or one of {', '.join(neurons)}")
    return time_layer, neurons[time_layer]


def fixed_batches(config: StudyConfig):
    """`steps` training batches and one held-out batch, drawn once so every setting sees the same."""
    dataset = load_dataset(
        config.data.name,
        config.data.root,
        train_subset=config.data.train_subset,
        seed=config.seed,
        augment=config.data.augment,
        image_size=config.data.image_size,
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        dataset.train, batch_size=config.data.batch_size, shuffle=True, generator=generator, drop_last=True
    )
    batches = list(itertools.islice(loader, config.steps + 1))
    if len(batches) < config.steps + 1:
        raise UserError(
            f"{config.steps} steps and a held-out batch need {(config.steps + 1) * config.data.batch_size} "
            f"training images; data.train_subset gives {len(dataset.train)}: raise it or lower steps"
        )
    return batches, dataset.info


def build_ann(config: StudyConfig, info) -> nn.Module:
    return build_architecture(
        config.model.name,
        info.num_classes,
        image_size=info.image_size,
        in_channels=info.channels,
        width=config.model.width,
        pooling=config.model.pooling,
    )


def measure_setting(
    config: StudyConfig, setting: SurrogateSetting, batches, info, device: torch.device, task=None
) -> dict[str, Any]:
    """Train one setting for `config.steps` steps; gradient norms per step, loss before and after."""
    options = config.direct_options(setting)
    time_steps = options.time_steps_train
    torch.manual_seed(config.seed)
    ann = build_ann(config, info)
    model = get_method("direct").network(ann, options, config.seed).to(device).train()
    # Each step's current must exist on its own: without this, a network fed the same image at every
    # step may hand its first neuron one current `[B, ...]` for all steps (same result, one gradient).
    model.constant_prefix = False
    optimizer = build_optimizer(model.parameters(), config.train)
    probe = GradientProbe(model, config.time_layer, time_steps)
    layer_norms, time_norms, losses = [], [], []
    finite = True
    try:
        for images, labels in batches[:-1]:
            probe.batch_size = len(images)
            loss = _loss(model, images.to(device), labels.to(device), time_steps, config.train.label_smoothing)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            layer_norms.append(probe.weight_grad_norms())
            time_norms.append(probe.time_grads.tolist() if probe.time_grads is not None else [0.0] * time_steps)
            if not all(math.isfinite(n) for n in layer_norms[-1]):
                finite = False
                break
            optimizer.step()
            if task is not None:
                task.advance(loss=losses[-1])
        probe.batch_size = len(batches[-1][0])
        with torch.no_grad():
            held_out = _loss(model, batches[-1][0].to(device), batches[-1][1].to(device), time_steps, 0.0).item()
    finally:
        probe.remove()
    return _summarize(config, setting, probe, layer_norms, time_norms, losses, held_out, finite)


def _loss(model, images, labels, time_steps: int, label_smoothing: float) -> torch.Tensor:
    model.reset_state()
    logits = model(images, time_steps).mean(0)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def _summarize(config, setting, probe, layer_norms, time_norms, losses, held_out, finite) -> dict[str, Any]:
    diverged = not finite or not all(math.isfinite(loss) for loss in losses) or not math.isfinite(held_out)
    finite_steps = [norms for norms in layer_norms if all(math.isfinite(n) for n in norms)]
    mean_norms = [sum(column) / len(finite_steps) for column in zip(*finite_steps)] if finite_steps else []
    ratio = mean_norms[0] / mean_norms[-1] if mean_norms and mean_norms[-1] > 0 else None
    flag = classify(ratio, config.exploding_ratio, config.vanishing_ratio, finite=not diverged)
    return {
        "setting": setting.label,
        **dataclasses.asdict(setting),
        "layers": list(probe.layer_order),
        "layer_grad_norms": _json_safe(layer_norms),
        "mean_layer_grad_norms": mean_norms,
        "time_layer": probe.time_layer,
        "time_grad_norms": _json_safe(time_norms),
        "first_layer_grad": mean_norms[0] if mean_norms else None,
        "last_layer_grad": mean_norms[-1] if mean_norms else None,
        "neuron_layers": list(probe.firing_rates),
        "firing_rates": list(probe.firing_rates.values()),
        "ratio": ratio,
        "flag": flag,
        "losses": _json_safe([losses])[0],
        "loss_after": None if diverged else held_out,
        "status": "diverged" if diverged else "ok",
        "steps_done": len(layer_norms),
    }


def _json_safe(rows: list[list[float]]) -> list[list[float | None]]:
    return [[value if math.isfinite(value) else None for value in row] for row in rows]


# --- The study --------------------------------------------------------------------------------


def study_base(config: StudyConfig) -> dict[str, Any]:
    """What every record of one study shares, except provenance."""
    return {
        "dataset": config.data.name,
        "architecture": config.model.name,
        "steps": config.steps,
        "batch_size": config.data.batch_size,
        "direct": dataclasses.asdict(config.direct_options()),
        "train": dataclasses.asdict(config.train),
        "exploding_ratio": config.exploding_ratio,
        "vanishing_ratio": config.vanishing_ratio,
        "seed": config.seed,
        "data": dataclasses.asdict(config.data),
        "model": dataclasses.asdict(config.model),
        "time_layer_option": config.time_layer,
    }


def run_study(config: StudyConfig, reporter=None, rerun: bool = False, command: str = "run_study(...)") -> Path:
    """Measure every setting not yet in the store, then regenerate the report; return its path."""
    reporter = reporter or QUIET
    device = resolve_device(config.device)
    study_dir = config.study_dir()
    store = study_dir / "records.jsonl"
    base = study_base(config)
    base_hash = hash_of(base)
    done = set() if rerun else _finished(store)
    batches, info = fixed_batches(config)
    build_ann(config, info)  # an unknown architecture or option fails here, before any training
    provenance = Provenance.capture(base_hash, config.seed, device)
    for setting in config.all_settings():
        setting_hash = hash_of([base_hash, dataclasses.asdict(setting)])
        if setting_hash in done:
            reporter.log(f"[dim]{setting.label}: already in {store}, skipped (use --rerun)[/dim]")
            continue
        started = time.perf_counter()
        with reporter.task(f"gradients {setting.label}", total=config.steps) as task:
            record = measure_setting(config, setting, batches, info, device, task)
        record.update(
            base,
            setting_hash=setting_hash,
            study_hash=base_hash,
            wall_s=time.perf_counter() - started,
            command=command,
            **dataclasses.asdict(provenance),
        )
        append_records(store, [record])
        reporter.log(f"{setting.label}: ratio {_format_ratio(record['ratio'])}, {record['flag']}")
    return write_report(study_dir)


def _finished(store: Path) -> set[str]:
    frame = read_records(store)
    return set() if frame.empty else set(frame["setting_hash"])


def _format_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.3g}"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        description="Gradient flow through depth and time for surrogate-gradient training of an SNN."
    )
    parser.add_argument("--config", help="YAML study config (default: configs/gradients.yaml)")
    parser.add_argument("--dataset", help="dataset name, e.g. tiny-imagenette or folder:PATH")
    parser.add_argument("--arch", help="architecture name, e.g. cifar_resnet20 or resnet18")
    parser.add_argument("--data-root", help="folder that holds the dataset")
    parser.add_argument("--steps", type=int, help="training steps per setting")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field, e.g. --set sweep.widths=[0.1,1]",
    )
    parser.add_argument("--rerun", action="store_true", help="measure settings again even when their records exist")
    parser.add_argument("--report-only", action="store_true", help="only regenerate the report from the saved records")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    overrides = list(args.set)
    flags = (
        ("dataset", "data.name"),
        ("arch", "model.name"),
        ("data_root", "data.root"),
        ("steps", "steps"),
        ("device", "device"),
    )
    overrides += [f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None]
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    return load_study_config(path, overrides)


def main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _run(argv))


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if args.report_only:
        report = write_report(config.study_dir())
    else:
        with Reporter(enabled=not args.quiet) as reporter:
            command = shlex.join(["python", "-m", "bench.studies.gradients", *(sys.argv[1:] if argv is None else argv)])
            report = run_study(config, reporter, rerun=args.rerun, command=command)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
