"""Spiking output layers: the last layer of a network that answers with spikes, not potentials.

`SpikingSoftmax` is the softmax output of Rueckauer et al. 2017 (Sec. 2.2.5) as the SNN Toolbox
runs it by default (`simulation/backends/inisim/temporal_mean_rate_tensorflow.py`,
`softmax_activation` with `softmax_to_relu = False`): each class integrates its input current
`[T, B, K]` without leak or reset, and at every step each class spikes, independently of the
others, with probability softmax(potential) over the classes. The class of a sample is the one
with the most spikes, which is what the harness's readout (the argmax of the mean output over the
first T steps) computes from these binary outputs `[T, B, K]`.
"""

from __future__ import annotations

import torch

from bench.spiking.encoders import OwnGenerator
from bench.spiking.neurons import SpikingNeuron


class SpikingSoftmax(OwnGenerator, SpikingNeuron):
    """Integrate logits `[T, B, K]` (no reset, no leak); spike with probability softmax(potential)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(threshold=1.0)
        self.seed = seed
        self._generator = None

    def integrate(self, current: torch.Tensor, threshold: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        potentials = self.carried_potential(current[0], threshold) + current.cumsum(0)
        self.potential = potentials[-1]
        probabilities = torch.softmax(potentials, dim=-1)
        uniform = torch.rand(
            probabilities.shape,
            generator=self._generator_for(current.device),
            device=current.device,
            dtype=probabilities.dtype,
        )
        # The toolbox fires where a uniform draw is at most the probability.
        return (uniform <= probabilities).to(current.dtype)
