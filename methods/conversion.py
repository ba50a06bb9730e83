"""The `conversion` method: the trained ANN, its ReLUs turned into integrate-and-fire neurons.

The ANN is the very network the `ann` reference reports (same cache entry), so its accuracy is the
ceiling the spike rates approach as T grows. The machinery (BN folding, calibration, weight or
threshold normalization, residual scales) lives in `bench.conversion`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from bench.api import RunContext, register_method
from bench.conversion import convert, convertible_graph
from bench.errors import UserError
from bench.spiking import SpikingModel, SpikingNetwork, build_encoder
from bench.training import trained_ann


@dataclass
class ConversionOptions:
    """How the ANN is converted (the machinery is in `bench.conversion`).

    normalization        `weight`: thresholds 1, binary spikes, weights rescaled layer by layer;
                         `threshold`: weights kept, thresholds = scales. Same spikes either way.
    statistic            activation scale per ReLU: `percentile` (Rueckauer 2017) or `max` (Diehl 2015)
    percentile           which percentile of the calibration activations, zeros included
    granularity          one scale per `layer` or per `channel`
    calibration_batches  how many shuffled batches of unaugmented training images to calibrate on
    reset                `subtract` the threshold after a spike (keeps the residue) or reset to `zero`
    initial_potential    membrane potential at t = 0, as a fraction of the threshold
    input_coding         `poisson` rate-coded spikes of the image, or `direct` analog current
    """

    normalization: Literal["weight", "threshold"] = "weight"
    statistic: Literal["percentile", "max"] = "percentile"
    percentile: float = 99.99
    granularity: Literal["layer", "channel"] = "layer"
    calibration_batches: int = 8
    reset: Literal["subtract", "zero"] = "subtract"
    initial_potential: float = 0.5
    input_coding: Literal["poisson", "direct"] = "poisson"

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise UserError(f"conversion percentile must be in (0, 100], got {self.percentile}")
        if self.calibration_batches < 1:
            raise UserError(f"conversion calibration_batches must be at least 1, got {self.calibration_batches}")
        if not 0 <= self.initial_potential < 1:
            raise UserError(
                f"conversion initial_potential is a fraction of the threshold in [0, 1), got {self.initial_potential}"
            )


@register_method(
    "conversion", family="conversion", paper="Diehl et al. 2015; Rueckauer et al. 2017", options=ConversionOptions
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

    body, _ = convert(
        network,
        calibration_images(),
        normalization=options.normalization,
        statistic=options.statistic,
        percentile=options.percentile,
        granularity=options.granularity,
        max_batches=options.calibration_batches,
        reset=options.reset,
        initial_potential=options.initial_potential,
        device=context.device,
    )
    context.notes.update(
        epochs=report.epochs,
        train_wall_s=report.wall_s,
        time_steps_train=0,
        calibration_wall_s=time.perf_counter() - started,
        calibration_images=sum(batch_sizes),
    )
    return SpikingNetwork(body, build_encoder(options.input_coding, context.seed))
