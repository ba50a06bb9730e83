"""`qcfs`: an ANN trained with quantization-clip-floor-shift activations, converted to IF neurons.

Bu et al., ICLR 2022, "Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency Spiking
Neural Networks" (reference code: github.com/putshua/SNN_conversion_QCFS, continued as
github.com/putshua/ANN_SNN_QCFS). Every ReLU of the
architecture, the one after each residual add included, becomes

    a = lambda * floor(clip(z / lambda, 0, 1) * L + 1/2) / L

with one trainable lambda per layer (initially 8), L quantization levels and the straight-through
gradient through the floor (the floor's gradient taken as 1). The clip comes before the floor, as
in the authors' code (github.com/putshua/ANN_SNN_QCFS, `Models/layer.py`, `IF.forward` with
T = 0): the value is the paper's Eq. 16 either way, but the gradient is not. A floor before the
clip puts levels 0 and L exactly on the clip's bounds, where `torch.clamp` passes no gradient
(pinned in tests/test_faithful_conversion.py), so inputs below half a level or above L - 1/2
levels would learn nothing; clipped first, every z in (0, lambda) learns. Here the code is
followed rather than the paper: its Eq. 18 passes the z-gradient on (-lambda/2L, lambda -
lambda/2L), and its Eq. 19 for lambda is one the authors' README calls wrong, saying the code
(autograd through the clip-first form) is right.

The trained network is converted: batch norm folded into the convolutions, each activation an
IF neuron with threshold lambda, reset by subtraction, starting at lambda / 2 (the shift), whose
spikes carry the amplitude lambda; the image is the analog input at every step. An IF neuron fed a constant current for
L steps then fires floor(z * L / lambda + 1/2) times (clipped to 0..L), the activation's own
level, so the converted network is close to its ANN from T = L on.

The QCFS ANN is not the `ann` row's ReLU network: it is trained and cached under its own key (L
and the initial lambda are part of it), and its own accuracy is this row's ceiling (`qcfs-ann`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from bench.api import RunContext, register_method
from bench.config import hash_of
from bench.conversion import convertible_graph, fold_batch_norm, threshold_balance
from bench.errors import UserError
from bench.spiking import AnalogModel, SpikingNetwork, build_encoder, replace_modules, replace_relus
from bench.training import fit


@dataclass
class QCFSOptions:
    """levels: L, the quantization steps of each activation (4 suits 32 px CIFAR-like data).
    initial_lambda: each layer's threshold lambda before training. input_coding: `direct`
    (analog image every step, the paper's) or `poisson`. epochs, lr: null takes the run's
    `train:` section."""

    levels: int = 4
    initial_lambda: float = 8.0
    input_coding: Literal["direct", "poisson"] = "direct"
    epochs: int | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise UserError(f"methods[qcfs].options.levels must be at least 1, got {self.levels}")
        if not self.initial_lambda > 0:
            raise UserError(f"methods[qcfs].options.initial_lambda must be positive, got {self.initial_lambda}")


class QuantClipFloorShift(nn.Module):
    """The QCFS activation (module docstring), elementwise on any shape; `threshold` is lambda."""

    def __init__(self, levels: int = 4, initial_lambda: float = 8.0) -> None:
        super().__init__()
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(float(initial_lambda)))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, lambda={self.threshold.item():.4g}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        shifted = torch.clamp(z / self.threshold, 0, 1) * self.levels + 0.5
        floored = shifted + (shifted.floor() - shifted).detach()  # floor forward, identity backward
        return self.threshold * floored / self.levels


def qcfs_network(ann: nn.Module, options: QCFSOptions) -> nn.Module:
    """The ANN with a QCFS activation for every ReLU."""
    replace_relus(ann, lambda name: QuantClipFloorShift(options.levels, options.initial_lambda))
    return ann


def convert_qcfs(network: nn.Module) -> nn.Module:
    """The spiking body: BN folded, each QCFS activation an IF neuron of threshold lambda from lambda/2."""
    thresholds = {
        name: module.threshold.detach().clone()
        for name, module in network.named_modules()
        if isinstance(module, QuantClipFloorShift)
    }
    return threshold_balance(
        fold_batch_norm(with_relus(network)), thresholds, reset_mode="subtract", initial_potential=0.5
    )


def with_relus(network: nn.Module) -> nn.Module:
    """A copy of `network` with ReLUs where its QCFS activations are, as the converter expects."""
    relu_network = copy.deepcopy(network)
    replace_modules(relu_network, QuantClipFloorShift, lambda name, module: nn.ReLU())
    return relu_network


# 2: the clip before the floor (version 1 floored first and learned nothing on levels 0 and L).
QCFS_VERSION = 2


@register_method(
    "qcfs",
    family="conversion",
    paper="Bu et al. 2022, ICLR, arXiv:2303.04347",
    options=QCFSOptions,
    version=QCFS_VERSION,
    reference="github.com/putshua/ANN_SNN_QCFS: Models/layer.py IF (T = 0 trains, T > 0 spikes)",
    departures=(
        "the training recipe (epochs, optimizer, schedule) is the run's `train:` section, not the "
        "reference's 300 epochs of SGD, so that every row of a config trains on one budget; the "
        "gradient follows the code (clip, then floor), not the paper's Eq. 18-19"
    ),
)
def build_qcfs(context: RunContext) -> SpikingNetwork:
    """The QCFS-trained ANN converted to IF neurons that start at half threshold."""
    options: QCFSOptions = context.options
    torch.manual_seed(context.seed)
    network = qcfs_network(context.build_ann(), options).to(context.device)
    convertible_graph(with_relus(network))  # an architecture the converter refuses fails here, before training
    overrides = {name: getattr(options, name) for name in ("epochs", "lr") if getattr(options, name) is not None}
    train = dataclasses.replace(context.train, **overrides)
    key = hash_of([context.fingerprint, train, options.levels, options.initial_lambda, QCFS_VERSION])
    report = fit(
        network,
        network,
        context.loader("train", shuffle=True),
        train,
        context.device,
        checkpoint_path=Path(context.cache_dir) / f"qcfs-ann-{context.architecture}-{key}.pt",
        reporter=context.progress,
        description=f"train qcfs ann {context.architecture} L={options.levels}",
    )
    context.ceiling = AnalogModel(network)
    context.notes.update(
        epochs=report.epochs,
        train_wall_s=report.wall_s,
        train_history=report.history,
        time_steps_train=0,
        thresholds={
            name: round(m.threshold.item(), 4)
            for name, m in network.named_modules()
            if isinstance(m, QuantClipFloorShift)
        },
    )
    return SpikingNetwork(convert_qcfs(network), build_encoder(options.input_coding, context.seed))
