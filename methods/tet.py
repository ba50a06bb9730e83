"""`tet`: temporal efficient training, a spiking ResNet with a loss on every time step.

Deng et al., ICLR 2022, "Temporal Efficient Training of Spiking Neural Network via Gradient
Re-weighting" (arXiv:2202.11946; reference code github.com/Gus-Lab/temporal_efficient_training).
Instead of the cross-entropy of the time-averaged output, the loss averages the cross-entropy of
each step's output O_t `[B, K]` and regularizes all outputs towards a constant phi:

    L = (1 - lambda) * mean_t CE(O_t, y) + lambda * MSE(O, phi)       (O: [T, B, K], phi = 1)

(`functions.py`, `TET_loss`). lambda = 0.05, the paper's value for CIFAR (Sec. 5.2, "the lambda is
set to 0.05"; the reference's CIFAR script defaults to 0.0, its DVS script to 1e-3: the paper is
followed). The neuron is the reference's (`models/layers.py`, `LIFSpike`; paper Eq. 1-3, 5):
mem = 0.5 mem + x, fire above the threshold 1, hard reset to 0 kept in the gradient, and the
triangular (ZIF) surrogate of width 1 and height 1. Everything else (BN on the currents over time
and batch, BPTT, the optimizer and its schedule) is `direct`'s, through
`methods.direct.train_direct`; the readout at test time is the same time average as for every
method, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.api import RunContext, register_method
from bench.errors import UserError
from bench.spiking import SpikingNetwork
from methods.direct import DirectOptions, spiking_network, train_direct


@dataclass
class TETOptions(DirectOptions):
    """`direct`'s options with the reference neuron's defaults (leak 0.5, hard reset), plus
    tet_lambda (the weight of the MSE term) and tet_target (phi)."""

    leak: float = 0.5
    reset: Literal["subtract", "zero"] = "zero"
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
    reference="github.com/Gus-Lab/temporal_efficient_training: models/layers.py LIFSpike, ZIF; functions.py TET_loss",
    departures=(
        "fires at >= where the reference fires at > (the same spikes unless a potential equals the "
        "threshold exactly); the optimizer, epochs and architecture are the run's (the reference: "
        "Adam 1e-3, ResNet-19)"
    ),
)
def build_tet(context: RunContext) -> SpikingNetwork:
    """`direct` trained with the TET loss on every time step."""
    options: TETOptions = context.options
    smoothing = context.train.label_smoothing

    def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return tet_loss(outputs, labels, options.tet_lambda, options.tet_target, smoothing)

    return train_direct(context, options, name="tet", loss=loss)
