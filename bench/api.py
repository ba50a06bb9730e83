"""The contract a method is written against: `RunContext`, `register_method`, the method registry.

A method is one function, registered with its metadata:

    from bench.api import RunContext, register_method

    @register_method("mymethod", family="direct", paper="Author 2024, arXiv:...",
                     options=MyOptions)
    def build(context: RunContext) -> SpikingModel: ...

It receives a `RunContext` (data, architecture, its own options, training config, device,
cache folder) and returns a `bench.spiking.SpikingModel` that the harness simulates. A method
never computes accuracy; the harness never knows how the method trained. Whatever the method
wants recorded about its training (epochs, time steps, wall time) goes into `context.notes`.

Packages outside this repository register methods through the entry-point group
`spikebench.methods` (each entry point names a module whose import registers its methods), or
through the `plugins:` list of a config / `--plugin MODULE` on the command line. The built-in
methods (the `methods` package) are loaded here, on the first lookup; nothing else in `bench`
imports them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bench.config import TrainConfig, build_dataclass
from bench.data import DatasetSplits
from bench.errors import UserError
from bench.registry import Registry, describe
from bench.spiking import SpikingModel

ENTRY_POINT_GROUP = "spikebench.methods"
Family = Literal["direct", "conversion", "hybrid", "reference"]
FAMILIES = ("direct", "conversion", "hybrid", "reference")


@dataclass
class NoOptions:
    """A method without options."""


@dataclass
class RunContext:
    """Everything a method may use to build its spiking model.

    `fingerprint` identifies the data, architecture and seed; methods use it (with their own
    options) to name cached networks and checkpoints under `cache_dir`. `compile_neurons` asks
    for compiled neuron kernels (`SpikingNetwork(compile_neurons=...)`) where the method trains.

    A method whose spiking network comes from an ANN of its own (not the `ann` row's) sets
    `ceiling` to that ANN as a model (`AnalogModel(network)`): the harness evaluates it too, and
    the leaderboard shows it as the row `<label>-ann`, the ceiling of the method's row.
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
    compile_neurons: bool = False
    data_loader: Callable[..., torch.utils.data.DataLoader] | None = None
    progress: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    ceiling: SpikingModel | None = None

    def loader(self, split: str, *, shuffle: bool = False, batch_size: int | None = None):
        """A DataLoader over `train`, `test` or `calibration`, set up by the harness."""
        return self.data_loader(split, shuffle=shuffle, batch_size=batch_size)


@dataclass(frozen=True)
class MethodEntry:
    """A registered method. `network`, when the method gives one, builds its untrained spiking
    network from an ANN, `network(ann, options, seed)`, for studies that train it their own way
    (the gradient-flow study). `version` is raised when the same options come to compute something
    else (a fixed bug, a default made faithful): it enters the setting's hash, so records and cached
    networks of the old behaviour are not taken for the new one. `reference` names the authors'
    code the default follows (repository, file, function) and `departures` what the default
    still does differently, and why; both are shown by `--list-methods` and the README."""

    name: str
    build: Callable[[RunContext], SpikingModel]
    family: Family
    paper: str
    options: type
    description: str
    network: Callable[[nn.Module, Any, int], SpikingModel] | None = None
    version: int = 1
    reference: str = ""
    departures: str = ""

    def make_options(self, values: dict[str, Any], where: str) -> Any:
        """Validated options: the registered defaults updated with `values`."""
        return build_dataclass(self.options, values, f"{where}.")

    @property
    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options())


def _load_builtin_methods() -> None:
    importlib.import_module("methods")  # the one place `bench` imports the built-in plugins


METHODS: Registry[MethodEntry] = Registry(
    "method", entry_point_group=ENTRY_POINT_GROUP, loaders=(_load_builtin_methods,)
)


def register_method(
    name: str | None = None,
    *,
    family: Family,
    paper: str = "",
    options: type = NoOptions,
    network: Callable[[nn.Module, Any, int], SpikingModel] | None = None,
    version: int = 1,
    reference: str = "",
    departures: str = "",
):
    """Decorator: register `build(context) -> SpikingModel` under `name` (default: its name).
    `version`, `reference`, `departures`: see `MethodEntry`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not dataclasses.is_dataclass(options):
        raise TypeError("options must be a dataclass whose fields all have defaults")

    def decorate(build: Callable[[RunContext], SpikingModel]):
        method_name = name or build.__name__
        doc = (build.__doc__ or "").strip().splitlines()
        entry = MethodEntry(
            method_name,
            build,
            family,
            paper,
            options,
            doc[0] if doc else "",
            network,
            version,
            reference,
            departures,
        )
        METHODS.add(method_name, entry, origin=describe(build))
        return build

    return decorate


def load_plugins(modules: list[str] = ()) -> None:
    """Import the named modules so that they register methods (entry points load on first lookup)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise UserError(
                f"plugin module {module!r} cannot be imported ({error}); check its name and PYTHONPATH"
            ) from None
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 (a plugin can fail in any way on import)
            raise UserError(
                f"plugin module {module!r} failed on import: {type(error).__name__}: {error}; fix it"
            ) from None


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style wildcard, sorted."""
    return METHODS.names(pattern)


def get_method(name: str) -> MethodEntry:
    return METHODS.get(name)
