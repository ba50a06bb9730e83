"""`direct`: surrogate-gradient backpropagation through time, with BN on the input currents.

Ledinauskas et al. 2020 (arXiv:2006.04436). The architecture's ANN becomes a spiking network:
every ReLU is a LIF (or IF) neuron and every BatchNorm, which sits between a conv/linear layer
and its neuron, normalizes the neuron's input current. The body runs on the flattened
`[T*B, C, H, W]` batch, so each BatchNorm takes its statistics over time and batch together
(tdBN-like). Input `[B, C, H, W]` is encoded to `[T, B, C, H, W]` (direct or Poisson); the
readout is the time average of the last layer's outputs `[T, B, K] -> [B, K]`, trained with
cross-entropy through `bench.training.fit`.

Surrogate defaults: triangular, width 1, height 1 around threshold 1, from the gradient-flow study
(`python -m bench.studies.gradients --config configs/gradients.yaml`, report in
results/gradients/tiny-imagenette-cifar_resnet20/). On ResNet-20 (22 weight layers, LIF leak 0.9,
T = 4, BN on) the ratio of the first layer's weight-gradient norm to the last layer's, which is
0.55 for the ANN itself, was:

    width            0.05      0.5       1        4
    triangular      8.3e-11   2.6e-3    0.67     1.0e6
    rectangular     6.8e-10   0.053     5.8      2.2e7
    arctan          7.2e-8    2.0       805      7.6e7      (arctan width 0.25, height 4: 1.6e8)

Triangular width 1 is the one whose profile through depth matches the ANN's: narrower surrogates
lose gradient layer after layer (vanishing), wider or heavy-tailed ones amplify it (exploding),
and the effect compounds with depth and with T. Without BN on the currents the network is silent
beyond its first stage at the default initialization for every surrogate, so BN is on by default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from bench.api import RunContext, register_method
from bench.config import TrainConfig, hash_of
from bench.errors import UserError
from bench.spiking import (
    LIFNeuron,
    ParametricLIFNeuron,
    SpikingNetwork,
    Surrogate,
    ThresholdDependentBatchNorm,
    build_encoder,
    pre_addition_norms,
    replace_modules,
    replace_relus,
)
from bench.training import fit

DIVERGENCE_HINT = (
    "the surrogate gradient is probably too wide or too tall for this depth (gradients explode "
    "through layers and time: go back to the default triangular surrogate, width 1, height 1, and "
    "check with `python -m bench.studies.gradients`), or the learning rate is too high (lower lr)"
)


@dataclass
class DirectOptions:
    """Options of `direct` (the method's config `options:`).

    neuron, leak, threshold, reset, detach_reset: the spiking neuron (leak applies to `lif` only;
    `plif` learns one leak per layer, 1/tau = sigmoid(w), from tau = plif_initial_tau (Fang et
    al., ICCV 2021); `detach_reset` keeps the reset out of the backward). surrogate,
    surrogate_width, surrogate_height: the surrogate gradient (`bench.spiking.surrogates`).
    time_steps_train: T of backpropagation through time. batch_norm: true (BN on the currents),
    `tdbn` (threshold-dependent BN, Zheng et al., AAAI 2021: the normalized current scaled by
    tdbn_alpha * threshold, and by tdbn_alpha / sqrt(2) * threshold just before a residual
    addition) or false (every BatchNorm removed, the ablation). encoder: `direct`
    (analog image every step) or `poisson`. optimizer, lr, epochs: null takes the run's `train:`
    section, a value overrides it for this method only.
    """

    neuron: Literal["lif", "if", "plif"] = "lif"
    leak: float = 0.9
    threshold: float = 1.0
    reset: Literal["subtract", "zero"] = "subtract"
    detach_reset: bool = False
    surrogate: str = "triangular"
    surrogate_width: float = 1.0
    surrogate_height: float = 1.0
    time_steps_train: int = 4
    batch_norm: bool | Literal["tdbn"] = True
    encoder: Literal["direct", "poisson"] = "direct"
    recompute_activations: bool = False  # memory for long T_train: recompute blocks in the backward pass
    optimizer: Literal["sgd", "adamw"] | None = None
    lr: float | None = None
    epochs: int | None = None
    plif_initial_tau: float = 2.0
    tdbn_alpha: float = 1.0

    def __post_init__(self) -> None:
        where = "methods[direct].options"
        if not self.plif_initial_tau > 1:
            raise UserError(
                f"{where}.plif_initial_tau must be above 1 (1/tau is the leak rate), got {self.plif_initial_tau}"
            )
        if not self.tdbn_alpha > 0:
            raise UserError(f"{where}.tdbn_alpha must be positive, got {self.tdbn_alpha}")
        if not 0 < self.leak <= 1:
            raise UserError(f"{where}.leak must be in (0, 1] (1 = no leak), got {self.leak}")
        if not self.threshold > 0:
            raise UserError(f"{where}.threshold must be positive, got {self.threshold}")
        if self.time_steps_train < 1:
            raise UserError(f"{where}.time_steps_train must be at least 1, got {self.time_steps_train}")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"{where}.lr must be positive (or null for train.lr), got {self.lr}")
        if self.epochs is not None and self.epochs < 0:
            raise UserError(f"{where}.epochs must be 0 or more (or null for train.epochs), got {self.epochs}")
        self.make_surrogate()  # an unknown shape or a non-positive width fails at config time

    def make_surrogate(self) -> Surrogate:
        return Surrogate(self.surrogate, self.surrogate_width, self.surrogate_height)


def make_neuron(options: DirectOptions) -> LIFNeuron:
    common = dict(
        threshold=options.threshold,
        reset_mode=options.reset,
        surrogate=options.make_surrogate(),
        detach_reset=options.detach_reset,
    )
    if options.neuron == "plif":
        return ParametricLIFNeuron(initial_tau=options.plif_initial_tau, **common)
    return LIFNeuron(leak=options.leak if options.neuron == "lif" else 1.0, **common)


def spiking_network(
    ann: nn.Module, options: DirectOptions, seed: int = 0, compile_neurons: bool = False
) -> SpikingNetwork:
    """The ANN with neurons for ReLUs, and its batch norms as the options say."""
    replace_relus(ann, lambda name: make_neuron(options))
    if options.batch_norm is False:
        replace_modules(ann, nn.modules.batchnorm._BatchNorm, lambda name, norm: nn.Identity())
    elif options.batch_norm == "tdbn":
        before_addition = pre_addition_norms(ann)
        replace_modules(
            ann,
            nn.BatchNorm2d,
            lambda name, norm: ThresholdDependentBatchNorm(
                norm.num_features,
                alpha=options.tdbn_alpha / (math.sqrt(2) if name in before_addition else 1.0),
                threshold=options.threshold,
                eps=norm.eps,
                momentum=norm.momentum,
            ),
        )
    return SpikingNetwork(
        ann,
        build_encoder(options.encoder, seed),
        checkpoint=options.recompute_activations,
        compile_neurons=compile_neurons,
    )


def time_averaged_logits(model: SpikingNetwork, time_steps: int):
    """images [B, C, H, W] -> logits [B, K]: a fresh state, `time_steps` steps, mean over time."""
    outputs = per_step_outputs(model, time_steps)
    return lambda images: outputs(images).mean(0)


def per_step_outputs(model: SpikingNetwork, time_steps: int):
    """images [B, C, H, W] -> outputs [T, B, K] of a fresh state."""

    def compute(images: torch.Tensor) -> torch.Tensor:
        model.reset_state()
        return model(images, time_steps)

    return compute


def train_config(train: TrainConfig, options: DirectOptions) -> TrainConfig:
    overrides = {
        name: getattr(options, name) for name in ("optimizer", "lr", "epochs") if getattr(options, name) is not None
    }
    return dataclasses.replace(train, **overrides)


@register_method(
    "direct",
    family="direct",
    paper="Ledinauskas et al. 2020, arXiv:2006.04436",
    options=DirectOptions,
    network=spiking_network,
)
def build_direct(context: RunContext) -> SpikingNetwork:
    """Surrogate-gradient BPTT over T_train steps, BN on input currents over time and batch."""
    return train_direct(context, context.options)


# Part of the cache key of trained networks: raised when the same options build a different
# network (2: tdBN scales the batch norms before a residual addition by 1/sqrt(2)).
NETWORK_VERSION = 2


def train_direct(context: RunContext, options: DirectOptions, name: str = "direct", loss=None) -> SpikingNetwork:
    """The `direct` network trained by BPTT over `options.time_steps_train` steps and cached under
    `name`; with a `loss(outputs [T, B, K], labels)` (TET) the loss reads every step, else the
    cross-entropy of the time-averaged outputs."""
    torch.manual_seed(context.seed)
    model = spiking_network(context.build_ann(), options, context.seed, context.compile_neurons).to(context.device)
    train = train_config(context.train, options)
    key = hash_of([context.fingerprint, context.train, dataclasses.asdict(options), NETWORK_VERSION])
    steps = options.time_steps_train
    report = fit(
        model,
        time_averaged_logits(model, steps) if loss is None else per_step_outputs(model, steps),
        context.loader("train", shuffle=True),
        train,
        context.device,
        checkpoint_path=Path(context.cache_dir) / f"{name}-{context.architecture}-{key}.pt",
        reporter=context.progress,
        description=f"train {name} {context.architecture} T={steps}",
        divergence_hint=DIVERGENCE_HINT,
        loss=loss,
    )
    model.reset_state()
    context.notes.update(
        epochs=report.epochs,
        time_steps_train=options.time_steps_train,
        train_wall_s=report.wall_s,
        train_history=report.history,
    )
    return model
