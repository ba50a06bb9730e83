"""Calibration: the activation scale of every ReLU, measured on training images.

The scale of a ReLU is the value its spiking neuron should fire at full rate for: the maximum of
its activations (Diehl et al. 2015) or a high percentile of them (Rueckauer et al. 2017), which
ignores rare outliers and so lets the neuron fire faster for typical inputs. It is one number per
layer (a 0-d tensor) or one per channel (`[C]`, channel = dimension 1 of `[B, C, ...]`).
Percentiles are taken over all activations, zeros included, or over the non-zero ones only
(`nonzero=True`, what the SNN Toolbox does: `conversion/utils.py`, `normalize_parameters`), with the
linear interpolation of `torch.quantile` (and of `numpy.percentile`).

A percentile is computed exactly without keeping every activation: with p = percentile / 100,
only the top (1 - p) * N + 2 values of N can enter it, so each batch keeps just that many per row
(`StreamingQuantile`), which also sidesteps the input-size limit of `torch.quantile`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

Statistic = Literal["max", "percentile"]
Granularity = Literal["layer", "channel"]


class StreamingQuantile:
    """The q-quantile of each row of a stream of `[rows, n]` chunks, as `torch.quantile` gives it.

    `max_total` bounds the number of values a row will see in all; it fixes how many of the
    largest values of each chunk can still matter.
    """

    def __init__(self, quantile: float, max_total: int) -> None:
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        self.quantile = quantile
        self.keep = min(max_total, math.ceil((1 - quantile) * max_total) + 3)
        self.kept: list[torch.Tensor] = []
        self.total = 0

    def update(self, rows: torch.Tensor) -> None:
        keep = min(self.keep, rows.shape[1])
        self.kept.append(rows.topk(keep, dim=1, sorted=False).values)
        self.total += rows.shape[1]

    def result(self) -> torch.Tensor:
        kept = torch.cat(self.kept, dim=1).sort(dim=1).values
        # Sorted position q * (N - 1) of the whole stream, with q rounded to the values' dtype as
        # torch.quantile does. The top `keep` values of the union of the chunks' top values are
        # the stream's top `keep`, so position i is kept[i - offset].
        rank = torch.tensor(self.quantile, dtype=kept.dtype).item() * (self.total - 1)
        if self.total - math.floor(rank) > self.keep:
            raise RuntimeError(f"saw {self.total} values per row, more than the {self.keep} kept per chunk allow")
        offset = self.total - kept.shape[1]
        below, above = math.floor(rank) - offset, math.ceil(rank) - offset
        weight = torch.tensor(rank - math.floor(rank), dtype=kept.dtype, device=kept.device)
        return torch.lerp(kept[:, below], kept[:, above], weight)


class _ScaleMeter:
    """Accumulates one ReLU's activations `[B, C, ...]` into its scale."""

    def __init__(
        self, statistic: Statistic, percentile: float, granularity: Granularity, batches: int, nonzero: bool = False
    ) -> None:
        self.statistic = statistic
        self.percentile = percentile
        self.granularity = granularity
        self.batches = batches
        self.nonzero = nonzero
        self.maximum: torch.Tensor | None = None
        self.quantile: StreamingQuantile | None = None
        self.row_quantiles: list[StreamingQuantile] = []  # one per row when rows differ in length

    def __call__(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        output = output.detach().float()
        rows = (
            output.transpose(0, 1).reshape(output.shape[1], -1)
            if self.granularity == "channel"
            else output.reshape(1, -1)
        )
        if self.statistic == "max":
            batch_max = rows.amax(dim=1)
            self.maximum = batch_max if self.maximum is None else torch.maximum(self.maximum, batch_max)
            return
        if self.nonzero:
            self._update_nonzero(rows)
            return
        if self.quantile is None:
            # Later batches are never larger than the first, so this bounds the whole stream.
            self.quantile = StreamingQuantile(self.percentile / 100, rows.shape[1] * self.batches)
        self.quantile.update(rows)

    def _update_nonzero(self, rows: torch.Tensor) -> None:
        """Each row's non-zero values, one stream per row (their counts differ from row to row)."""
        if not self.row_quantiles:
            self.row_quantiles = [StreamingQuantile(self.percentile / 100, rows.shape[1] * self.batches) for _ in rows]
        for quantile, row in zip(self.row_quantiles, rows):
            values = row[row != 0]
            if len(values):
                quantile.update(values.unsqueeze(0))

    def _nonzero_result(self) -> torch.Tensor:
        # A row without a non-zero value gets 0 here and the fallback of `scale` (the toolbox's 1).
        return torch.stack([q.result()[0].cpu() if q.total else torch.tensor(0.0) for q in self.row_quantiles])

    def scale(self) -> torch.Tensor:
        if self.statistic == "max":
            values = self.maximum
        else:
            values = self._nonzero_result() if self.nonzero else self.quantile.result()
        values = values.cpu()
        if self.granularity == "layer":
            return _positive(values.reshape(()), fallback=torch.tensor(1.0))
        return _positive(values, fallback=_positive(values.max(), fallback=torch.tensor(1.0)))


def _positive(values: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    # A channel that never fired on the calibration images would get threshold 0 and fire at
    # every step; give it the layer's largest scale (or 1) instead.
    return torch.where(values > 0, values, fallback)


@torch.no_grad()
def activation_scales(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    statistic: Statistic = "percentile",
    percentile: float = 99.99,
    granularity: Granularity = "layer",
    max_batches: int = 8,
    device: torch.device | str = "cpu",
    nonzero: bool = False,
) -> dict[str, torch.Tensor]:
    """{qualified ReLU name: scale} from the first `max_batches` image batches `[B, C, H, W]`;
    `nonzero`: percentiles of the non-zero activations only."""
    model = model.to(device).eval()
    meters = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            meters[name] = _ScaleMeter(statistic, percentile, granularity, max_batches, nonzero)
            handles.append(module.register_forward_hook(meters[name]))
    seen = 0
    try:
        # islice stops before fetching a batch it would not use.
        for images in itertools.islice(batches, max_batches):
            model(images.to(device))
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise ValueError("calibration got no batches")
    return {name: meter.scale() for name, meter in meters.items()}
