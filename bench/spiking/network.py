"""The spiking model the harness simulates, and the surgery that makes one from an ANN.

The contract between a method and the harness (`SpikingModel`):

    model(images [B, C, H, W], time_steps) -> outputs [time_steps, B, K]
    model.reset_state()          clears every neuron's membrane potential
    model.spiking_layers()       {name: neuron} of the layers whose firing the harness counts
    model.time_invariant         True when every step's output is the same (an ANN)

State is carried from one call to the next, so the harness can simulate a long run in time
chunks; it resets the state before every batch. The readout at T is the mean of the first T
outputs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.spiking.neurons import LIFNeuron


class SpikingModel(nn.Module):
    """Base of every model a method hands to the harness (see the module docstring)."""

    time_invariant = False

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def reset_state(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_state"):
                module.reset_state()

    def spiking_layers(self) -> dict[str, LIFNeuron]:
        return {name: module for name, module in self.named_modules() if isinstance(module, LIFNeuron)}


class SpikingNetwork(SpikingModel):
    """An ANN-shaped body whose ReLUs are neurons, fed by an input encoder.

    The body runs on the flattened `[T*B, ...]` batch, so every stateless layer sees time and
    batch together (batch norm therefore takes its statistics over both).
    """

    def __init__(self, body: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.encoder = encoder
        self._neurons = [m for m in body.modules() if isinstance(m, LIFNeuron)]
        if not self._neurons:
            raise ValueError("the body has no spiking neurons: replace its ReLUs first")

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:
        inputs = self.encoder(images, time_steps)
        for neuron in self._neurons:
            neuron.time_steps = time_steps
        outputs = self.body(inputs.flatten(0, 1))
        return outputs.unflatten(0, (time_steps, -1))


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
    targets = [name for name, child in module.named_modules() if isinstance(child, nn.ReLU)]
    for qualified_name in targets:
        parent_name, _, child_name = qualified_name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, make_neuron(qualified_name))
    return len(targets)
