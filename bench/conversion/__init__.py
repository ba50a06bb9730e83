"""ANN-to-SNN conversion: fold batch norm, calibrate activation scales, normalize, swap ReLUs for IF neurons.

    ann --fold_batch_norm--> graph --activation_scales(images)--> {relu: scale}
        --threshold_balance | weight_normalize--> spiking body (flattened [T*B, ...] in, logits out)

The body goes into `bench.spiking.SpikingNetwork` with an input encoder. Images are `[B, C, H, W]`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.fx
from torch import nn

from bench.conversion.calibrate import Granularity, Statistic, StreamingQuantile, activation_scales
from bench.conversion.graph import feeding_layer, fold_batch_norm, node_role, trace
from bench.conversion.normalize import ChannelScale, threshold_balance, weight_normalize

Normalization = Literal["weight", "threshold"]
NORMALIZERS = {"weight": weight_normalize, "threshold": threshold_balance}

__all__ = [
    "ChannelScale",
    "StreamingQuantile",
    "activation_scales",
    "convert",
    "convertible_graph",
    "feeding_layer",
    "fold_batch_norm",
    "node_role",
    "threshold_balance",
    "trace",
    "weight_normalize",
]


def convertible_graph(ann: nn.Module) -> torch.fx.GraphModule:
    """`ann` traced with its batch norms folded; a `UserError` names any layer that cannot spike.

    Cheap enough to run on an untrained network, so a method can refuse an architecture before
    it spends time training it.
    """
    graph = fold_batch_norm(ann)
    for node in graph.graph.nodes:
        node_role(graph, node)
    return graph


def convert(
    ann: nn.Module,
    images: Iterable[torch.Tensor],
    *,
    normalization: Normalization = "weight",
    statistic: Statistic = "percentile",
    percentile: float = 99.99,
    granularity: Granularity = "layer",
    max_batches: int = 8,
    reset: str = "subtract",
    initial_potential: float = 0.0,
    device: torch.device | str = "cpu",
    nonzero: bool = False,
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The spiking body of `ann` and the activation scales it was normalized with.

    `images` yields calibration batches (training images without augmentation); the first
    `max_batches` are used; `nonzero` takes percentiles of the non-zero activations only. `ann`
    itself is not modified.
    """
    graph = convertible_graph(ann)
    scales = activation_scales(
        graph,
        images,
        statistic=statistic,
        percentile=percentile,
        granularity=granularity,
        max_batches=max_batches,
        device=device,
        nonzero=nonzero,
    )
    body = NORMALIZERS[normalization](graph, scales, reset_mode=reset, initial_potential=initial_potential)
    return body, scales
