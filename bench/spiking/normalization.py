"""Batch norm for spiking networks: threshold-dependent batch norm (tdBN).

Zheng et al., AAAI 2021, "Going Deeper With Directly-Trained Larger Spiking Neural Networks".
On the flattened `[T*B, C, H, W]` input (statistics over time, batch and space, as every batch
norm in a `SpikingNetwork` already takes them), the normalized current is scaled by
`alpha * threshold` before the affine map:

    y = weight * (alpha * threshold * (x - mean) / sqrt(var + eps)) + bias

so that the pre-synaptic input of every neuron starts on the scale of its threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ThresholdDependentBatchNorm(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose normalized output is scaled by `alpha * threshold` (see the module)."""

    def __init__(self, num_features: int, alpha: float = 1.0, threshold: float = 1.0, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.alpha = alpha
        self.neuron_threshold = threshold

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, threshold={self.neuron_threshold}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        batch_statistics = self.training or self.running_mean is None
        scale = self.alpha * self.neuron_threshold
        weight = self.weight * scale if self.affine else torch.full((self.num_features,), scale, device=x.device)
        tracked = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if tracked else None,
            self.running_var if tracked else None,
            weight,
            self.bias,
            batch_statistics,
            factor,
            self.eps,
        )
