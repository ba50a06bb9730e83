"""The `conversion` method: the trained ANN, its ReLUs turned into integrate-and-fire neurons.

Rueckauer et al. 2017, "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven
Networks for Image Classification" (Front. Neurosci. 11:682), as its reference implementation, the
SNN Toolbox (github.com/NeuromorphicProcessorProject/snn_toolbox), runs it with its default
config (`snntoolbox/config_defaults`). By default, step by step:

1. Batch norm is folded into the layer before it (Sec. 2.2.3; `parsing/utils.py`, `absorb_bn_parameters`).
2. Each ReLU's scale is the 99.9th percentile of its non-zero activations on the calibration
   images, one per layer (Sec. 2.2.2 "robust normalization"; `conversion/utils.py`,
   `normalize_parameters`, `get_percentile`: `percentile = 99.9`), and the weights are normalized,
   W' = W * lambda_in / lambda_out, b' = b / lambda_out; the output layer keeps scale 1, as the
   toolbox does for a softmax output.
3. Each ReLU becomes an IF neuron: threshold 1, membrane potential starting at 0, fire at >=,
   reset by subtraction, the bias added at every step (Sec. 2.1; `inisim/temporal_mean_rate_tensorflow.py`,
   `update_neurons`, `init_membrane_potential` with mode `zero`).
4. The analog image is the input current of the first layer at every step (Sec. 2.2.4;
   `poisson_input = False`).
5. The output is a spiking softmax (Sec. 2.2.5; `softmax_activation`): the logits are integrated
   without reset and each class spikes with probability softmax(potential) at every step; the
   class is the one with the most spikes (`bench.spiking.readout.SpikingSoftmax`).

What still differs: the toolbox counts a sample without any output spike as wrong (class -1)
where the harness's argmax answers class 0. A step has no output spike with probability
prod_k (1 - p_k) <= 1/e (the p_k sum to 1), so after T steps at most e^-T of the samples have
none: a third at T = 1, under 2 % at T = 4. Residual additions are summed by `bench.conversion`
rather than through the toolbox's concatenate-and-1x1-conv rewrite (the same sums). Like the
toolbox, spikes pass through every layer within the step they are emitted.

spikebench's own converter is the row `conversion-improved` of the configs (options
`percentile_of: all, initial_potential: 0.5, input_coding: poisson, readout: analog`), chosen by
measurement (`python run_all.py --config configs/conversion_sweep.yaml --results-dir
results/conversion-sweep`: tiny-imagenette, cifar_resnet8, 6 epochs, 500 test images, analog
input, percentiles of all activations, analog readout; ANN 59.4 %). Top-1 (%) at T = 1 / 4 / 16 /
32 / 64 / 256 / 1000:

    percentile, initial potential     T=1    4     16    32    64    256   1000
    99,     0                        10.0  10.0  32.6  49.0  53.2  57.2  57.6
    99.9,   0                        10.0  10.0  20.0  45.4  53.6  58.6  59.4
    99.99,  0                        10.0  10.2  13.0  34.0  50.4  58.8  60.0
    max,    0                        10.0  10.0  10.0  12.6  33.0  56.6  58.8
    99,     0.5                      26.2  48.8  56.0  57.2  57.6  58.2  58.4
    99.9,   0.5                       7.8  28.0  56.6  58.4  58.8  59.6  59.4
    99.99,  0.5                       9.4  23.6  51.0  56.8  59.4  59.4  59.6
    max,    0.5                      10.0  17.0  27.6  45.6  57.4  59.6  59.4
    99.9,   0.5, Poisson input       11.6  33.2  50.4  56.8  59.2  58.8  59.8
    99.99,  0.5, Poisson input       10.8  30.4  51.8  56.4  59.2  59.6  60.0

Starting at half the threshold helps at every T (it turns the IF neuron's floor into rounding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from torch import nn

from bench.api import RunContext, register_method
from bench.conversion import convert, convertible_graph
from bench.errors import UserError
from bench.spiking import SpikingModel, SpikingNetwork, build_encoder
from bench.spiking.readout import SpikingSoftmax
from bench.training import trained_ann


@dataclass
class ConversionOptions:
    """How the ANN is converted (the machinery is in `bench.conversion`).

    normalization        `weight`: thresholds 1, binary spikes, weights rescaled layer by layer;
                         `threshold`: weights kept, thresholds = scales. Same spikes either way.
    statistic            activation scale per ReLU: `percentile` (Rueckauer 2017) or `max` (Diehl 2015)
    percentile           which percentile of the calibration activations
    percentile_of        `nonzero` activations only (the toolbox's) or `all`, zeros included
    granularity          one scale per `layer` or per `channel`
    calibration_batches  how many shuffled batches of unaugmented training images to calibrate on
    reset                `subtract` the threshold after a spike (keeps the residue) or reset to `zero`
    initial_potential    membrane potential at t = 0, as a fraction of the threshold
    input_coding         `direct` analog current, or `poisson` rate-coded spikes of the image
    readout              `spiking_softmax` (class of the most output spikes) or `analog` (the
                         time-averaged logits of the last layer)
    """

    normalization: Literal["weight", "threshold"] = "weight"
    statistic: Literal["percentile", "max"] = "percentile"
    percentile: float = 99.9
    percentile_of: Literal["nonzero", "all"] = "nonzero"
    granularity: Literal["layer", "channel"] = "layer"
    calibration_batches: int = 8
    reset: Literal["subtract", "zero"] = "subtract"
    initial_potential: float = 0.0
    input_coding: Literal["direct", "poisson"] = "direct"
    readout: Literal["spiking_softmax", "analog"] = "spiking_softmax"

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise UserError(f"conversion percentile must be in (0, 100], got {self.percentile}")
        if self.calibration_batches < 1:
            raise UserError(f"conversion calibration_batches must be at least 1, got {self.calibration_batches}")
        if not 0 <= self.initial_potential < 1:
            raise UserError(
                f"conversion initial_potential is a fraction of the threshold in [0, 1), got {self.initial_potential}"
            )


def converted_network(network, images, options: ConversionOptions, seed: int = 0, device="cpu") -> SpikingNetwork:
    """Steps 1-5 of the module docstring: `network` converted with `options`, calibrated on the
    image batches `images` yields (`[B, C, H, W]`)."""
    body, _ = convert(
        network,
        images,
        normalization=options.normalization,
        statistic=options.statistic,
        percentile=options.percentile,
        granularity=options.granularity,
        max_batches=options.calibration_batches,
        reset=options.reset,
        initial_potential=options.initial_potential,
        device=device,
        nonzero=options.percentile_of == "nonzero",
    )
    if options.readout == "spiking_softmax":
        body = nn.Sequential(body, SpikingSoftmax(seed))
    return SpikingNetwork(body, build_encoder(options.input_coding, seed))


@register_method(
    "conversion",
    family="conversion",
    paper="Rueckauer et al. 2017, Front. Neurosci. 11:682; Diehl et al. 2015",
    options=ConversionOptions,
    reference=(
        "github.com/NeuromorphicProcessorProject/snn_toolbox: conversion/utils.py normalize_parameters; "
        "simulation/backends/inisim/temporal_mean_rate_tensorflow.py (INI simulator, default config)"
    ),
    departures=(
        "a sample with no output spike is read as class 0 (the toolbox counts it wrong); residual "
        "additions are summed directly instead of the toolbox's concatenate-and-1x1-conv rewrite"
    ),
)
def build_conversion(context: RunContext) -> SpikingModel:
    """The trained ANN converted to IF neurons with calibrated, normalized thresholds."""
    options: ConversionOptions = context.options
    convertible_graph(context.build_ann())  # refuse max pooling and the like before training
    network, report = trained_ann(context)
    started = time.perf_counter()
    batch_sizes: list[int] = []

    def calibration_images():
        # Shuffled, so that the first batches of a class-sorted folder hold every class.
        for images, _ in context.loader("calibration", shuffle=True):
            batch_sizes.append(len(images))
            yield images

    model = converted_network(network, calibration_images(), options, context.seed, context.device)
    context.notes.update(
        epochs=report.epochs,
        train_wall_s=report.wall_s,
        time_steps_train=0,
        calibration_wall_s=time.perf_counter() - started,
        calibration_images=sum(batch_sizes),
    )
    return model
