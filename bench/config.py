"""Run configuration: YAML files in `configs/` loaded into validated dataclasses.

A config has five sections (`data`, `model`, `train`, `eval`, `methods`) and a few top-level
fields. Command-line overrides use dotted paths, `--set train.epochs=3`, parsed as YAML values.
An unknown key or a bad value raises `UserError` before any work starts. Method options are
checked against the option dataclass each method registers (see `bench.api`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bench.errors import UserError

DEFAULT_TIME_GRID = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
# The longest simulation a config may ask for: 100 times the paper-scale 1000 steps. Time grows
# linearly with T (cifar_resnet8 on one CPU core: about 27 s per 1000 steps of 64 images);
# memory does not, as the harness simulates in chunks.
MAX_TIME_STEPS = 100_000
MAX_SEED = 2**63 - 1


@dataclass
class DataConfig:
    name: str = "tiny-imagenette"
    root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: int | None = None
    augment: bool = True
    batch_size: int = 64
    eval_batch_size: int = 250
    workers: int = 0

    def __post_init__(self) -> None:
        _require(
            self.batch_size >= 1 and self.eval_batch_size >= 1,
            "data.batch_size and data.eval_batch_size must be at least 1",
        )
        _require(self.workers >= 0, "data.workers must be 0 or more")
        for name in ("train_subset", "test_subset", "image_size"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"data.{name} must be at least 1 (or null for all)")


@dataclass
class ModelConfig:
    name: str = "cifar_resnet8"
    width: float = 1.0
    pooling: Literal["avg", "max"] = "avg"

    def __post_init__(self) -> None:
        _require(self.width > 0, f"model.width must be positive, got {self.width}")


@dataclass
class TrainConfig:
    epochs: int = 10
    optimizer: Literal["sgd", "adamw", "amsgrad"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    label_smoothing: float = 0.0
    amp: bool = True
    sync_batch_norm: bool = False

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, f"train.epochs must be 0 or more, got {self.epochs}")
        _require(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        _require(self.weight_decay >= 0, f"train.weight_decay must be 0 or more, got {self.weight_decay}")
        _require(0 <= self.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")


# eval.memory_budget_mb on a CPU when it is null (bench.harness.default_budget_bytes).
CPU_BUDGET_MB = 256


@dataclass
class EvalConfig:
    time_steps: list[int] = field(default_factory=lambda: list(DEFAULT_TIME_GRID))
    chunk_size: int | None = None
    # Memory one simulated chunk may take; null: 80 % of the GPU's free memory, 256 MB on a CPU.
    memory_budget_mb: int | None = None
    count_operations: bool = True
    pj_per_mac: float = 4.6
    pj_per_ac: float = 0.9

    def __post_init__(self) -> None:
        _require(
            len(self.time_steps) > 0 and all(t >= 1 for t in self.time_steps),
            "eval.time_steps must be a non-empty list of positive integers",
        )
        self.time_steps = sorted(set(self.time_steps))
        _require(
            self.time_steps[-1] <= MAX_TIME_STEPS,
            f"eval.time_steps goes up to {self.time_steps[-1]}, above the maximum of {MAX_TIME_STEPS} steps "
            f"(simulation time grows linearly with T); use a shorter grid",
        )
        _require(
            self.chunk_size is None or self.chunk_size >= 1,
            "eval.chunk_size must be at least 1 (or null for automatic)",
        )
        _require(
            self.memory_budget_mb is None or self.memory_budget_mb >= 1,
            "eval.memory_budget_mb must be at least 1 (or null: a share of the device's free memory)",
        )
        _require(self.pj_per_mac >= 0 and self.pj_per_ac >= 0, "eval.pj_per_mac and eval.pj_per_ac must be 0 or more")


@dataclass
class MethodSpec:
    """One row of the leaderboard: a registered method, an optional label and its options.

    max_time_steps: read this row only at the T of `eval.time_steps` up to this value (null: the
    whole grid), for rows that need not be simulated to the grid's end, such as directly trained
    networks read to T = 256 beside conversions read to T = 1000.
    """

    name: str
    label: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    max_time_steps: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.max_time_steps is None or self.max_time_steps >= 1,
            f"methods[{self.display_name}].max_time_steps must be at least 1 (or null for the whole grid)",
        )

    def time_steps(self, grid: list[int]) -> list[int]:
        """The T of `grid` this row is read at."""
        return [t for t in grid if self.max_time_steps is None or t <= self.max_time_steps]

    @property
    def display_name(self) -> str:
        return self.label or self.name


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec("ann")])
    # One seed, or several: the suite then runs once per seed and the leaderboard shows the mean
    # and spread over them. A seed sets initialization, data order, augmentation and subsets.
    seed: int | list[int] = 0
    device: str = "auto"
    # Run the neurons' training steps as `torch.compile` kernels: faster, the same results up to the
    # order of float operations; like `device`, recorded with the results but not part of a setting.
    compile_neurons: bool = False
    # Deterministic algorithms where PyTorch has them, TF32 off and cuDNN's autotuner off
    # (`bench.runner.make_deterministic`): a resumed CUDA run then ends with the same weights as an
    # uninterrupted one, at some cost in speed. Recorded with the results, not part of a setting.
    deterministic: bool = False
    # A run's records and leaderboards go to `results_dir`; `results/` holds the published
    # references, which a run is compared with (`bench.reference`) and which only a run given
    # `--results-dir results` writes to.
    results_dir: str = "runs"
    reference_dir: str | None = "results"  # None or "": compare with nothing
    cache_dir: str = "~/.cache/spikebench"
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        labels = [spec.display_name for spec in self.methods]
        for spec in self.methods:
            _require(
                bool(spec.time_steps(self.eval.time_steps)),
                f"methods[{spec.display_name}].max_time_steps = {spec.max_time_steps} is below every T of "
                f"eval.time_steps ({self.eval.time_steps[0]} is the smallest); raise it or drop it",
            )
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        _require(not duplicates, f"methods share the label(s) {', '.join(duplicates)}: give each a distinct `label`")
        if isinstance(self.seed, list):
            _require(
                len(self.seed) > 0 and len(set(self.seed)) == len(self.seed),
                f"seed must be an integer or a non-empty list of distinct integers, got {self.seed}",
            )
        for seed in self.seeds:
            _require(0 <= seed <= MAX_SEED, f"seeds must be in 0 .. 2**63 - 1, got {seed}")

    @property
    def seeds(self) -> list[int]:
        return list(self.seed) if isinstance(self.seed, list) else [self.seed]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections, for caches and provenance."""
        chosen = {name: self.to_dict()[name] for name in sections}
        if chosen.get("eval", {}).get("memory_budget_mb", 0) is None:
            # The automatic budget hashes as 256, the default it replaced: a budget changes no result,
            # and the configs' hashes (which the reports match records with) stay as they were.
            chosen["eval"]["memory_budget_mb"] = CPU_BUDGET_MB
        return hash_of(chosen)


def hash_of(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """Make `cls` from a mapping, refusing unknown keys and values of the wrong type."""
    if not isinstance(values, dict):
        raise UserError(f"{where or 'the config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown key {where}{unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    converted = {name: coerce(hints[name], value, f"{where}{name}") for name, value in values.items()}
    return cls(**converted)


def coerce(hint: Any, value: Any, where: str) -> Any:
    """Check `value` against a type hint (dataclass, list, Literal, Optional, scalars)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, f"{where}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(option, value, where)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise UserError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return [coerce(args[0], item, f"{where}[{index}]") for index, item in enumerate(value)]
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}")
        return value
    return _coerce_scalar(hint, value, where)


def _coerce_scalar(hint: type, value: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config field {where} has unsupported type {hint}")
    raise UserError(f"{where} must be of type {hint.__name__}, got {value!r}")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (or the defaults), apply `key.path=value` overrides, validate."""
    values: dict[str, Any] = {}
    if path is not None:
        values = read_yaml(Path(path))
    for override in overrides:
        apply_override(values, override)
    methods = values.get("methods")
    if isinstance(methods, list):
        values["methods"] = [{"name": item} if isinstance(item, str) else item for item in methods]
    return build_dataclass(RunConfig, values, "")


def shipped_configs() -> Path:
    """The folder of the configs shipped with spikebench: `configs/` of a checkout (and of an
    editable install), or its copy installed as package data `bench/configs/`."""
    installed = Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "configs"


def find_config(name: str | Path) -> Path:
    """A config file: the path as given when it exists, else a shipped config by file name or stem
    (`default`, `cifar10_methods_cpu.yaml`, `configs/default.yaml` from any folder)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs() / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


def read_yaml(path: Path) -> dict[str, Any]:
    path = find_config(path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in shipped_configs().glob("*.yaml"))) or "none found"
        raise UserError(f"config file {path} does not exist; give a path or a shipped config ({known})")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise UserError(f"config file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML ({first_line}); fix the file") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of sections, not {type(values).__name__}")
    return values


def apply_override(values: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise UserError(f"override {override!r} must look like section.key=value, for example train.epochs=3")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        raise UserError(f"override {override!r} has a value that is not valid YAML") from None
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"override {override!r}: {part!r} is not a section")
    node[leaf] = value
