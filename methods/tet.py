"""`tet`: temporal efficient training, the `direct` network with a loss on every time step.

Deng et al., ICLR 2022, "Temporal Efficient Training of Spiking Neural Network via Gradient
Re-weighting" (reference code: github.com/brain-intelligence-lab/temporal_efficient_training).
Instead of the cross-entropy of the time-averaged output, the loss averages the cross-entropy of
each step's output O_t `[B, K]` and regularizes all outputs towards a constant phi:

    L = (1 - lambda) * mean_t CE(O_t, y) + lambda * MSE(O, phi)       (O: [T, B, K], phi = 1)

with lambda = 0.05 for CIFAR in the paper. Everything else (neurons, BN on the currents, BPTT,
the optimizer and its schedule) is `direct`'s, through `methods.direct.train_direct`; the
readout at test time is the same time average as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.api import RunContext, register_method
from bench.errors import UserError
from bench.spiking import SpikingNetwork
from methods.direct import DirectOptions, spiking_network, train_direct


@dataclass
class TETOptions(DirectOptions):
    """`direct`'s options, plus tet_lambda (the weight of the MSE term) and tet_target (phi)."""

    tet_lambda: float = 0.05
    tet_target: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.tet_lambda <= 1:
            raise UserError(f"methods[tet].options.tet_lambda must be in [0, 1], got {self.tet_lambda}")


def tet_loss(
    outputs: torch.Tensor, labels: torch.Tensor, lam: float, target: float = 1.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The TET loss of per-step outputs `[T, B, K]` (see the module docstring)."""
    steps = outputs.shape[0]
    per_step = F.cross_entropy(outputs.flatten(0, 1), labels.repeat(steps), label_smoothing=label_smoothing)
    if lam == 0:
        return per_step
    return (1 - lam) * per_step + lam * F.mse_loss(outputs, torch.full_like(outputs, target))


@register_method(
    "tet",
    family="direct",
    paper="Deng et al. 2022, ICLR, arXiv:2202.11946",
    options=TETOptions,
    network=spiking_network,
)
def build_tet(context: RunContext) -> SpikingNetwork:
    """`direct` trained with the TET loss on every time step."""
    options: TETOptions = context.options
    smoothing = context.train.label_smoothing

    def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return tet_loss(outputs, labels, options.tet_lambda, options.tet_target, smoothing)

    return train_direct(context, options, name="tet", loss=loss)
