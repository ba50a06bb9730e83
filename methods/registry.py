"""The method registry: how a method plugs into the harness.

A method is one function, registered with its metadata:

    @register_method("mymethod", family="direct", paper="Author 2024, arXiv:...",
                     options=MyOptions)
    def build(context: RunContext) -> SpikingModel: ...

It receives a `RunContext` (data, architecture, its own options, training config, device,
cache folder) and returns a `bench.spiking.SpikingModel` that the harness simulates. A method
never computes accuracy; the harness never knows how the method trained. Whatever the method
wants recorded about its training (epochs, time steps, wall time) goes into `context.notes`.

Packages outside this repository register methods through the entry-point group
`spikebench.methods` (each entry point names a module or callable that registers on import), or
through the `plugins:` list of a config / `--plugin MODULE` on the command line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import nn

from bench.config import TrainConfig, build_dataclass
from bench.datasets import DatasetSplits
from bench.errors import UserError
from bench.spiking import SpikingModel

ENTRY_POINT_GROUP = "spikebench.methods"
Family = Literal["direct", "conversion", "reference"]


@dataclass
class NoOptions:
    """A method without options."""


@dataclass
class RunContext:
    """Everything a method may use to build its spiking model.

    `fingerprint` identifies the data, architecture and seed; methods use it (with their own
    options) to name cached networks and checkpoints under `cache_dir`.
    """

    dataset: DatasetSplits
    architecture: str
    build_ann: Callable[[], nn.Module]
    options: Any
    train: TrainConfig
    device: torch.device
    cache_dir: Path
    seed: int = 0
    fingerprint: str = ""
    data_loader: Callable[..., torch.utils.data.DataLoader] | None = None
    progress: Any = None
    notes: dict[str, Any] = field(default_factory=dict)

    def loader(self, split: str, *, shuffle: bool = False, batch_size: int | None = None):
        """A DataLoader over `train`, `test` or `calibration`, set up by the harness."""
        return self.data_loader(split, shuffle=shuffle, batch_size=batch_size)


@dataclass(frozen=True)
class MethodEntry:
    name: str
    build: Callable[[RunContext], SpikingModel]
    family: Family
    paper: str
    options: type
    description: str

    def make_options(self, values: dict[str, Any], where: str) -> Any:
        """Validated options: the registered defaults updated with `values`."""
        return build_dataclass(self.options, values, f"{where}.")

    @property
    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options())


_METHODS: dict[str, MethodEntry] = {}
_entry_points_loaded = False


def register_method(name: str | None = None, *, family: Family, paper: str = "", options: type = NoOptions):
    """Decorator: register `build(context) -> SpikingModel` under `name` (default: its name)."""
    if family not in ("direct", "conversion", "reference"):
        raise ValueError(f"family must be direct, conversion or reference, got {family!r}")
    if not dataclasses.is_dataclass(options):
        raise TypeError("options must be a dataclass whose fields all have defaults")

    def decorate(build: Callable[[RunContext], SpikingModel]):
        method_name = name or build.__name__
        if method_name in _METHODS:
            raise ValueError(f"method {method_name!r} is already registered")
        doc = (build.__doc__ or "").strip().splitlines()
        _METHODS[method_name] = MethodEntry(method_name, build, family, paper, options, doc[0] if doc else "")
        return build

    return decorate


def load_plugins(modules: list[str] = ()) -> None:
    """Import methods from installed entry points (once) and from the named modules."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry_point.load()
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise UserError(f"plugin module {module!r} cannot be imported ({error}); check its name and PYTHONPATH") from None


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style wildcard, sorted."""
    load_plugins()
    return sorted(name for name in _METHODS if fnmatch.fnmatch(name, pattern))


def get_method(name: str) -> MethodEntry:
    load_plugins()
    if name not in _METHODS:
        raise UserError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]
