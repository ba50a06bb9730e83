"""`calibration`: conversion of the shared ANN repaired layer by layer for one target T.

Li et al., ICML 2021, "A Free Lunch From ANN: Towards Efficient, Accurate Spiking Neural Networks
Calibration" (reference code: github.com/yhhhli/SNN_Calibration). On the `ann` row's network
with batch norm folded:

1. Thresholds. For each ReLU, the threshold minimizing the squared error between the activation
   a and its clipped floor at the target T, floor(clip(a / theta * T, 0, T)) * theta / T, among
   95 candidates theta = max(a) * (1 - 0.01 i); averaged over calibration batches with
   momentum 0.9 (the paper's MMSE search).
2. Conversion. Each ReLU an IF neuron with that threshold, reset by subtraction, starting at
   half its threshold, spikes of the threshold's amplitude; analog input (`bench.conversion`).
   The reference code shifts the input by theta / (2 T) at each step instead; the total over
   the target T is the same.
3. `pipeline: light`: bias correction. Layer by layer, from the input: the SNN is simulated for
   the target T on one calibration batch, and the bias of the layer that feeds the neuron moves
   by the difference between the mean SNN output (rate times threshold) and the mean ANN
   activation of each channel, so that the two means agree.
   `pipeline: advanced`: light, then potential correction: layer by layer again, each neuron
   starts from its potential plus T times the difference between the ANN activation and the
   SNN output, per neuron, averaged over the batch (the reference's CIFAR setting; the paper's
   weight calibration is not done here).

The calibration targets one T (`target_time_steps`, shown in the row's setting); the harness
still reads the whole curve, so the table shows what it costs at other T.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from bench.api import RunContext, register_method
from bench.conversion import feeding_layer, fold_batch_norm, threshold_balance
from bench.efficiency import SpikeRecorder
from bench.errors import UserError
from bench.spiking import IFNeuron, SpikingNetwork, build_encoder
from bench.training import trained_ann

MOMENTUM = 0.9
CANDIDATES = 95


@dataclass
class CalibrationOptions:
    """pipeline: `light` (bias correction) or `advanced` (light + potential correction).
    target_time_steps: the T the thresholds and corrections are made for. threshold_batches:
    calibration batches for the thresholds (the bias and potential use the first one)."""

    pipeline: Literal["light", "advanced"] = "light"
    target_time_steps: int = field(default=32, metadata={"show": True})
    threshold_batches: int = 5
    input_coding: Literal["direct", "poisson"] = "direct"

    def __post_init__(self) -> None:
        if self.target_time_steps < 1 or self.threshold_batches < 1:
            raise UserError("methods[calibration].options: target_time_steps and threshold_batches must be at least 1")


class PotentialCorrectedIF(IFNeuron):
    """An IF neuron whose fresh potential adds a calibrated offset per neuron (`[C, H, W]` or `[F]`)."""

    def __init__(self, threshold: torch.Tensor, offset: torch.Tensor, **options) -> None:
        super().__init__(threshold, **options)
        self.register_buffer("offset", offset)

    def fresh_potential(self, like: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return super().fresh_potential(like, threshold) + self.offset


def clipped_floor(activations: torch.Tensor, threshold: torch.Tensor, time_steps: int) -> torch.Tensor:
    """What T steps of an IF neuron with this threshold can express of an activation."""
    return torch.clamp(activations / threshold * time_steps, 0, time_steps).floor() * threshold / time_steps


def mmse_threshold(activations: torch.Tensor, time_steps: int) -> torch.Tensor:
    """The candidate threshold with the least squared error of `clipped_floor` (step 1)."""
    top = activations.max().clamp(min=1e-8)
    candidates = [top * (1 - 0.01 * index) for index in range(CANDIDATES)]
    errors = torch.stack(
        [(activations - clipped_floor(activations, c, time_steps)).square().mean() for c in candidates]
    )
    return candidates[int(errors.argmin())]


@torch.no_grad()
def relu_outputs(graph: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ReLU's output of the ANN on a batch, by module name."""
    outputs: dict[str, torch.Tensor] = {}
    relus = {name: m for name, m in graph.named_modules() if isinstance(m, nn.ReLU)}
    handles = [
        m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)) for name, m in relus.items()
    ]
    try:
        graph(images)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


@torch.no_grad()
def snn_outputs(model: SpikingNetwork, images: torch.Tensor, time_steps: int) -> dict[str, torch.Tensor]:
    """Each neuron layer's output (by its name in the body, as the ANN's ReLU) summed over the
    batch and averaged over `time_steps`, `[C, ...]`."""
    recorder = SpikeRecorder(model.body)
    try:
        model.reset_state()
        model(images, time_steps)
    finally:
        recorder.close()
        model.reset_state()
    layers = neurons_of(model)
    return {
        name: spikes.sum(0) / time_steps * _per_channel(layers[name].threshold, spikes.ndim - 1)
        for name, spikes in recorder.spike_maps.items()
    }


def neurons_of(model: SpikingNetwork) -> dict[str, IFNeuron]:
    """The neurons by their names in the body (those of the ANN's ReLUs)."""
    return {name: m for name, m in model.body.named_modules() if isinstance(m, IFNeuron)}


def _per_channel(threshold: torch.Tensor, ndim: int) -> torch.Tensor:
    """A threshold (one, or one per channel) shaped to multiply one sample `[C, ...]`."""
    return threshold if threshold.ndim == 0 else threshold.view(-1, *([1] * (ndim - 1)))


def mmse_thresholds(graph: nn.Module, batches: list[torch.Tensor], time_steps: int) -> dict[str, torch.Tensor]:
    """Step 1: each ReLU's MMSE threshold, averaged over the batches with momentum."""
    thresholds: dict[str, torch.Tensor] = {}
    for images in batches:
        for name, activations in relu_outputs(graph, images).items():
            found = mmse_threshold(activations, time_steps)
            thresholds[name] = found if name not in thresholds else MOMENTUM * thresholds[name] + (1 - MOMENTUM) * found
    return thresholds


def output_gap(model: SpikingNetwork, ann: dict[str, torch.Tensor], name: str, images, time_steps: int) -> torch.Tensor:
    """Mean SNN output minus mean ANN activation of one layer, per neuron `[C, ...]` (batch mean)."""
    return snn_outputs(model, images, time_steps)[name] / len(images) - ann[name].mean(0)


def correct_biases(model: SpikingNetwork, ann: dict[str, torch.Tensor], images: torch.Tensor, time_steps: int) -> None:
    """Step 3, light: layer by layer, the feeding layer's bias absorbs each channel's mean gap."""
    for name in neurons_of(model):
        gap = output_gap(model, ann, name, images, time_steps)
        per_channel = gap.flatten(1).mean(1) if gap.ndim > 1 else gap
        layer = feeding_layer(model.body, name)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros_like(per_channel))
        layer.bias.data -= per_channel


def correct_potentials(
    model: SpikingNetwork, ann: dict[str, torch.Tensor], images: torch.Tensor, time_steps: int
) -> None:
    """Step 3, advanced: layer by layer, each neuron starts T times its own gap higher."""
    for name, neuron in list(neurons_of(model).items()):
        offset = -output_gap(model, ann, name, images, time_steps) * time_steps
        model.body.set_submodule(
            name,
            PotentialCorrectedIF(
                neuron.threshold, offset, reset_mode="subtract", initial_potential=0.5, spike_amplitude="threshold"
            ),
        )


def calibrate(graph: nn.Module, batches: list[torch.Tensor], options: CalibrationOptions, encoder) -> SpikingNetwork:
    """Steps 1-3 of the module docstring on a BN-folded ANN graph."""
    steps = options.target_time_steps
    body = threshold_balance(
        graph, mmse_thresholds(graph, batches, steps), reset_mode="subtract", initial_potential=0.5
    )
    model = SpikingNetwork(body, encoder).eval()
    images, ann = batches[0], relu_outputs(graph, batches[0])
    correct_biases(model, ann, images, steps)
    if options.pipeline == "advanced":
        correct_potentials(model, ann, images, steps)
    return model


@register_method(
    "calibration", family="conversion", paper="Li et al. 2021, ICML, arXiv:2106.06984", options=CalibrationOptions
)
def build_calibration(context: RunContext) -> SpikingNetwork:
    """The shared ANN converted with MMSE thresholds and calibrated layer by layer for one T."""
    options: CalibrationOptions = context.options
    network, report = trained_ann(context)
    started = time.perf_counter()
    graph = fold_batch_norm(network).to(context.device)
    loader = context.loader("calibration", shuffle=True)
    batches = [images.to(context.device) for images, _ in zip((b for b, _ in loader), range(options.threshold_batches))]
    model = calibrate(graph, batches, options, build_encoder(options.input_coding, context.seed))
    context.notes.update(
        epochs=report.epochs,
        train_wall_s=report.wall_s,
        time_steps_train=0,
        calibration_wall_s=time.perf_counter() - started,
        calibration_images=sum(len(images) for images in batches),
    )
    return model
