"""Batch norm for spiking networks: threshold-dependent batch norm (tdBN).

Zheng et al., AAAI 2021, "Going Deeper With Directly-Trained Larger Spiking Neural Networks".
On the flattened `[T*B, C, H, W]` input (statistics over time, batch and space, as every batch
norm in a `SpikingNetwork` already takes them), the normalized current is scaled by
`alpha * threshold` before the affine map:

    y = weight * (alpha * threshold * (x - mean) / sqrt(var + eps)) + bias

so that the pre-synaptic input of every neuron starts on the scale of its threshold. In a
residual block two normalized currents are added before the neuron, so the paper scales the batch
norms just before the addition (the last one of the residual branch and the one of a projection
shortcut) by alpha / sqrt(2) instead: the sum then has the variance of one branch.
`pre_addition_norms(model)` finds them in the CIFAR ResNets and timm's ResNets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Attributes that hold a residual block's shortcut: `shortcut` (bench.architectures), `downsample` (timm).
SHORTCUT_NAMES = ("shortcut", "downsample")


def pre_addition_norms(model: nn.Module) -> set[str]:
    """Qualified names of the batch norms whose output is added to another branch: in every module
    with a shortcut attribute, its last direct-child batch norm (the residual branch's end) and every
    batch norm inside the shortcut."""
    names: set[str] = set()
    for block_name, block in model.named_modules():
        shortcut_name = next((name for name in SHORTCUT_NAMES if hasattr(block, name)), None)
        if shortcut_name is None:
            continue
        prefix = f"{block_name}." if block_name else ""
        own = [name for name, child in block.named_children() if isinstance(child, nn.BatchNorm2d)]
        if own:
            names.add(prefix + own[-1])
        shortcut = getattr(block, shortcut_name)
        if isinstance(shortcut, nn.Module):
            names.update(
                f"{prefix}{shortcut_name}.{name}"
                for name, child in shortcut.named_modules()
                if isinstance(child, nn.BatchNorm2d)
            )
    return names


class ThresholdDependentBatchNorm(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose normalized output is scaled by `alpha * threshold` (see the module)."""

    traced_whole = True  # one node for torch.fx (its forward branches on training), folded like BN

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


class SyncThresholdDependentBatchNorm(nn.SyncBatchNorm):
    """tdBN with its statistics synchronized across processes (`train.sync_batch_norm`).

    SyncBatchNorm computes weight * x_hat + bias; tdBN wants weight * (alpha * threshold * x_hat) +
    bias, which is alpha * threshold times the former plus (1 - alpha * threshold) * bias: the same
    values and the same gradients for x, weight and bias.
    """

    def __init__(self, num_features: int, alpha: float = 1.0, threshold: float = 1.0, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.alpha = alpha
        self.neuron_threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.alpha * self.neuron_threshold
        synchronized = super().forward(x)
        if self.bias is None:
            return scale * synchronized
        return scale * synchronized + (1 - scale) * self.bias.view(1, -1, *([1] * (x.ndim - 2)))
