"""SpikingJelly and snnTorch networks as `SpikingModel`s: the harness reads their whole curve in one
pass, with spikes, SOPs and energy, like any row.

    model = from_spikingjelly(net)      # net: layers and neurons of spikingjelly.activation_based
    model = from_snntorch(net)          # net: one time step, snntorch neurons with init_hidden=True
    model = trained(context, model, "my-row", time_steps=4)   # in a plugin: BPTT with the run's recipe

Each library neuron is wrapped, in place, in a `LibraryNeuron` (a `bench.spiking.SpikingNeuron`
holding the original as `library_neuron`): it runs the library's own dynamics on `[T, B, ...]`
(SpikingJelly in its multi-step mode, snnTorch one step per call), keeps the library's own state
from one call to the next (so the harness's time chunks continue it), clears it with the
library's own reset, and calls the spike hooks the counters listen to. Everything else in the
network is stateless and runs on the flattened `[T*B, ...]` batch of `SpikingNetwork`, as the
suite's own bodies do: SpikingJelly layers are put in their single-step mode (where they are the
plain `torch.nn` layers) and `SeqToANNContainer`s become `nn.Sequential`s of the same modules.
The input is encoded by the suite's encoder (analog image at every step by default).

Spikes must be 0/1 (snnTorch's `graded_spikes_factor` 1): the counters count them as events.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.api import RunContext
from bench.config import hash_of
from bench.errors import UserError
from bench.spiking import DirectEncoder, SpikingNetwork
from bench.spiking.network import replace_modules
from bench.spiking.neurons import SpikingNeuron
from bench.training import fit


class LibraryNeuron(SpikingNeuron):
    """A neuron layer of another library behind the suite's neuron contract (see the module docstring)."""

    state_names = ()
    library = ""

    def __init__(self, library_neuron: nn.Module, threshold: float | torch.Tensor) -> None:
        super().__init__(threshold=threshold)
        self.library_neuron = library_neuron

    def extra_repr(self) -> str:
        return f"library={self.library}"

    def emits_events(self) -> bool:
        return True

    def state_snapshot(self) -> dict[str, Any]:
        return {"potential": self.library_state()}

    def restore_state(self, snapshot: dict[str, Any]) -> None:
        self.set_library_state(snapshot["potential"])

    # --- what each library defines --------------------------------------------------------------

    def library_state(self):  # pragma: no cover
        raise NotImplementedError

    def set_library_state(self, state) -> None:  # pragma: no cover
        raise NotImplementedError


class SpikingJellyNeuron(LibraryNeuron):
    """A `spikingjelly.activation_based.neuron.BaseNode`, run in its multi-step mode."""

    library = "spikingjelly"

    def __init__(self, library_neuron: nn.Module) -> None:
        super().__init__(library_neuron, threshold=float(library_neuron.v_threshold))
        library_neuron.step_mode = "m"

    def integrate(self, current: torch.Tensor, threshold: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        return self.library_neuron(current)

    def reset_state(self) -> None:
        self.library_neuron.reset()

    def library_state(self):
        return self.library_neuron._memories["v"]

    def set_library_state(self, state) -> None:
        self.library_neuron._memories["v"] = state


class SnnTorchNeuron(LibraryNeuron):
    """An snnTorch neuron with `init_hidden=True`, called once per time step."""

    library = "snntorch"

    def __init__(self, library_neuron: nn.Module) -> None:
        if not getattr(library_neuron, "init_hidden", False):
            raise UserError(
                f"{type(library_neuron).__name__}: spikebench runs snnTorch neurons that keep their own state; "
                "build them with init_hidden=True (and call them with the current only)"
            )
        factor = getattr(library_neuron, "graded_spikes_factor", 1.0)
        if not bool(torch.as_tensor(factor).eq(1).all()):
            raise UserError(
                f"{type(library_neuron).__name__}: graded spikes (graded_spikes_factor={factor}) are not events of "
                "amplitude 1; the counters need 0/1 spikes: build the neuron with graded_spikes_factor=1.0"
            )
        super().__init__(library_neuron, threshold=library_neuron.threshold.detach().clone())
        self.library_neuron.mem = torch.zeros(0)

    def integrate(self, current: torch.Tensor, threshold: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        steps = []
        for step_current in current:
            output = self.library_neuron(step_current)
            steps.append(output[0] if isinstance(output, tuple) else output)  # (spikes, potential) with output=True
        return torch.stack(steps)

    def reset_state(self) -> None:
        # An empty state: the next call starts from zeros of its own shape (snnTorch's reset keeps the old shape).
        self.library_neuron.mem = torch.zeros(0, device=self.library_neuron.mem.device)

    def library_state(self):
        return None if self.library_neuron.mem.numel() == 0 else self.library_neuron.mem

    def set_library_state(self, state) -> None:
        self.reset_state() if state is None else setattr(self.library_neuron, "mem", state)


def from_spikingjelly(network: nn.Module, encoder: nn.Module | None = None, **options) -> SpikingNetwork:
    """A SpikingJelly network (`spikingjelly.activation_based`; images `[T, B, ...]` in its multi-step
    mode) as a `SpikingNetwork`. `options` go to `SpikingNetwork` (e.g. `constant_prefix`)."""
    from spikingjelly.activation_based import base, layer
    from spikingjelly.activation_based.neuron import BaseNode

    replace_modules(network, layer.SeqToANNContainer, lambda name, container: nn.Sequential(*container))
    unsupported = [
        f"{name} ({type(m).__name__})"
        for name, m in network.named_modules()
        if isinstance(m, base.MemoryModule) and not isinstance(m, BaseNode)
    ]
    if unsupported:
        raise UserError(
            f"spikingjelly modules with state other than neurons cannot be adapted: {', '.join(unsupported)}; "
            "use its neurons (BaseNode) between stateless layers"
        )
    for module in network.modules():
        if isinstance(module, base.StepModule) and not isinstance(module, BaseNode):
            module.step_mode = "s"  # a stateless layer on the flattened batch: the plain torch.nn layer
    found = replace_modules(network, BaseNode, lambda name, neuron: SpikingJellyNeuron(neuron))
    return _spiking_network(
        network, found, "spikingjelly neurons (spikingjelly.activation_based.neuron)", encoder, options
    )


def from_snntorch(network: nn.Module, encoder: nn.Module | None = None, **options) -> SpikingNetwork:
    """An snnTorch network (one time step per call, `[B, ...]`, neurons with `init_hidden=True`) as a
    `SpikingNetwork`. `options` go to `SpikingNetwork`."""
    import snntorch

    found = replace_modules(network, snntorch.SpikingNeuron, lambda name, neuron: SnnTorchNeuron(neuron))
    return _spiking_network(network, found, "snnTorch neurons (snntorch.SpikingNeuron)", encoder, options)


def _spiking_network(body: nn.Module, found: int, what: str, encoder, options) -> SpikingNetwork:
    if not found:
        raise UserError(f"the network has no {what} to adapt")
    return SpikingNetwork(body, encoder if encoder is not None else DirectEncoder(), **options)


def trained(
    context: RunContext, model: SpikingNetwork, name: str, time_steps: int, architecture: str = ""
) -> SpikingNetwork:
    """`model` trained by backpropagation through `time_steps` steps with the run's recipe
    (`context.train`), the cross-entropy of its time-averaged outputs; checkpointed per epoch in
    the cache under `name` and the run's fingerprint and options (which must include
    `time_steps`), so a finished network is read back instead of trained again. The training's
    epochs, wall time and history go to the row's notes, and `architecture` (the network's own,
    not the config's `model.name`) to its records."""
    model = model.to(context.device)
    options = dataclasses.asdict(context.options) if dataclasses.is_dataclass(context.options) else {}
    key = hash_of([context.fingerprint, context.train, options])

    def logits(images: torch.Tensor) -> torch.Tensor:
        model.reset_state()
        return model(images, time_steps).mean(0)

    report = fit(
        model,
        logits,
        context.loader("train", shuffle=True),
        context.train,
        context.device,
        checkpoint_path=Path(context.cache_dir) / f"{name}-{key}.pt",
        reporter=context.progress,
        description=f"train {name} T={time_steps}",
    )
    model.reset_state()
    context.notes.update(
        epochs=report.epochs, time_steps_train=time_steps, train_wall_s=report.wall_s, train_history=report.history
    )
    if architecture:
        context.notes["architecture"] = architecture
    return model
