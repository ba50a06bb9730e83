"""Surrogate gradients: the spike is a Heaviside step forward and a smooth bump backward.

Every surrogate is a function g(x) of the distance to threshold, x = v - threshold, with a
`width` (how far from threshold gradients still flow) and a `height` (the peak g(0)):

    rectangular   height * [|x| < width / 2]
    triangular    height * max(0, 1 - |x| / width)
    fast_sigmoid  height / (1 + |x| / width)^2                 (SuperSpike, Zenke & Ganguli 2018)
    sigmoid       height * 4 s(1 - s),  s = sigmoid(x / width)  (derivative of a sigmoid)
    arctan        height / (1 + (x / width)^2)                   (derivative of an arctan)

A surrogate knows nothing of neurons; any neuron takes any surrogate. Shapes: any tensor. Width and
height are floats, or 0-dim tensors where the compiled neuron step passes them (so that one compiled
kernel serves every width: the hybrid method scales the width by each layer's threshold); a
registered shape should accept both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.errors import UserError
from bench.registry import Registry

SurrogateShape = Callable[[torch.Tensor, float | torch.Tensor, float | torch.Tensor], torch.Tensor]
SURROGATES: Registry[SurrogateShape] = Registry("surrogate shape")


def register_surrogate(name: str) -> Callable[[SurrogateShape], SurrogateShape]:
    """Register g(x, width, height) under `name`."""
    return SURROGATES.decorator(name)


def list_surrogates(pattern: str = "*") -> list[str]:
    return SURROGATES.names(pattern)


def _scaled(g: torch.Tensor, height: float | torch.Tensor) -> torch.Tensor:
    return g if not isinstance(height, torch.Tensor) and height == 1 else g.mul_(height)


@register_surrogate("rectangular")
def _rectangular(x: torch.Tensor, width: float, height: float) -> torch.Tensor:
    # In place on one new tensor: the fused neuron calls this once per time step.
    return _scaled(x.abs().lt_(width / 2), height)


@register_surrogate("triangular")
def _triangular(x: torch.Tensor, width: float, height: float) -> torch.Tensor:
    return _scaled(x.abs().mul_(-1 / width).add_(1).clamp_(min=0), height)  # 1 - |x| / width, at least 0


@register_surrogate("fast_sigmoid")
def _fast_sigmoid(x: torch.Tensor, width: float, height: float) -> torch.Tensor:
    return height / (1 + x.abs() / width) ** 2


@register_surrogate("sigmoid")
def _sigmoid(x: torch.Tensor, width: float, height: float) -> torch.Tensor:
    s = torch.sigmoid(x / width)
    return height * 4 * s * (1 - s)


@register_surrogate("arctan")
def _arctan(x: torch.Tensor, width: float, height: float) -> torch.Tensor:
    return height / (1 + (x / width) ** 2)


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate shape with its width and height: `surrogate.grad(x)` is g(x)."""

    shape: str = "triangular"
    width: float = 1.0
    height: float = 1.0

    def __post_init__(self) -> None:
        # An unknown shape is refused with the list of known ones; the function is looked up once
        # here, not at every time step of the backward pass.
        object.__setattr__(self, "_function", SURROGATES.get(self.shape))
        if not self.width > 0 or not self.height > 0:
            raise UserError(
                f"surrogate width and height must be positive, got width={self.width}, height={self.height}"
            )

    @property
    def function(self) -> SurrogateShape:
        """The registered g(x, width, height) of this shape."""
        return self._function

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self._function(x, self.width, self.height)


class SpikeFunction(torch.autograd.Function):
    """Heaviside(x) forward (x >= 0 fires), surrogate.grad(x) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.grad(x), None


def spike(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """Binary spikes where x >= 0, differentiable through the surrogate."""
    return SpikeFunction.apply(x, surrogate)
