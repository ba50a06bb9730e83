"""The spiking model the harness simulates, and the surgery that makes one from an ANN.

The contract between a method and the harness (`SpikingModel`, see also `bench.spiking`):

    model(images [B, C, H, W], time_steps) -> outputs [time_steps, B, K]
    model.reset_state()          clears the state of every stateful module (every neuron)
    model.spiking_layers()       {name: neuron} of the layers whose firing the harness counts
    model.time_invariant         True when every step's output is the same (an ANN)

State is carried from one call to the next, so the harness can simulate a long run in time
chunks; it resets the state before every batch. The readout at T is the mean of the first T
outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.spiking.acceleration import PrefixCheck, checkpoint_blocks, running_var_over_time
from bench.spiking.layout import TimeLayout, time_layout
from bench.spiking.neurons import SpikingNeuron, Stateful


class SpikingModel(nn.Module):
    """Base of every model a method hands to the harness (see the module docstring)."""

    time_invariant = False

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def reset_state(self) -> None:
        for module in self.modules():
            if isinstance(module, Stateful):
                module.reset_state()

    def spiking_layers(self) -> dict[str, SpikingNeuron]:
        return {name: module for name, module in self.named_modules() if isinstance(module, SpikingNeuron)}


class SpikingNetwork(SpikingModel):
    """An ANN-shaped body whose ReLUs are neurons, fed by an input encoder.

    The body runs on the flattened `[T*B, ...]` batch, so every stateless layer sees time and
    batch together (batch norm therefore takes its statistics over both).

    Three options change the cost, never the result (`bench.spiking.acceleration`):
    `constant_prefix` runs the layers before the first neuron once on `[B, ...]` when the encoder
    is constant in time (checked once per body structure, refused where it would differ);
    `checkpoint` recomputes each block's activations in the backward instead of storing them,
    for training at long T; `compile_neurons` runs the neurons' training steps as
    `torch.compile` kernels (`bench.spiking.fused`).
    """

    def __init__(
        self,
        body: nn.Module,
        encoder: nn.Module,
        *,
        constant_prefix: bool = True,
        checkpoint: bool = False,
        compile_neurons: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.encoder = encoder
        if not any(isinstance(m, SpikingNeuron) for m in body.modules()):
            raise ValueError("the body has no spiking neurons: replace its ReLUs first")
        self.constant_prefix = constant_prefix
        self.compile_neurons = compile_neurons
        self.uses_constant_prefix = False  # whether the last forward used it
        self._prefix_check = PrefixCheck()
        self.checkpoint = checkpoint

    @property
    def checkpoint(self) -> bool:
        return self._checkpoint

    @checkpoint.setter
    def checkpoint(self, enabled: bool) -> None:
        checkpoint_blocks(self.body, enabled)
        self._checkpoint = enabled

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:
        self.uses_constant_prefix = (
            self.constant_prefix
            and time_steps > 1
            and getattr(self.encoder, "constant_in_time", False)
            and self._prefix_check.usable_for(self, images)
        )
        if self.uses_constant_prefix and self.training:
            with running_var_over_time(self._prefix_check.norms, time_steps):
                outputs = self.run_body(images, time_steps, constant_prefix=True)
        else:
            outputs = self.run_body(images, time_steps, constant_prefix=self.uses_constant_prefix)
        return outputs.unflatten(0, (time_steps, -1))

    def run_body(
        self, images: torch.Tensor, time_steps: int, constant_prefix: bool, observed: bool = True
    ) -> torch.Tensor:
        """Body outputs `[T*B, ...]`; with `constant_prefix` the body starts from the images `[B, ...]`.
        `observed=False` hides the call from spike hooks (an internal re-run)."""
        layout = TimeLayout(time_steps, len(images) if constant_prefix else None, self.compile_neurons, observed)
        with time_layout(layout):
            if constant_prefix:
                return self.body(images)
            return self.body(self.encoder(images, time_steps).flatten(0, 1))


class AnalogModel(SpikingModel):
    """An ANN seen through the spiking contract: the same logits at every step."""

    time_invariant = True

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:
        logits = self.network(images)
        return logits.unsqueeze(0).expand(time_steps, *logits.shape)


def replace_relus(module: nn.Module, make_neuron: Callable[[str], nn.Module]) -> int:
    """Swap every `nn.ReLU` in the tree for `make_neuron(qualified_name)`; return how many."""
    return replace_modules(module, nn.ReLU, lambda name, relu: make_neuron(name))


def replace_modules(
    module: nn.Module, kind: type | tuple[type, ...], make: Callable[[str, nn.Module], nn.Module]
) -> int:
    """Swap every submodule of type `kind` for `make(qualified_name, old_module)`; return how many."""
    targets = [(name, child) for name, child in module.named_modules() if name and isinstance(child, kind)]
    for qualified_name, child in targets:
        parent_name, _, child_name = qualified_name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, make(qualified_name, child))
    return len(targets)
