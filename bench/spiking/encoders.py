"""Input encoders: a static image batch `[B, C, H, W]` becomes an input sequence `[T, B, C, H, W]`.

- `direct`: the analog image is the input current at every step.
- `poisson`: rate coding. Each pixel value x (after dataset normalization, so it may be negative)
  becomes spikes of amplitude a * sign(x) that fire with probability |x| / a, where a is the
  largest |x| of that image. The expected input per step is exactly x, so the first layer sees
  the analog image on average and the code is unbiased.

Encoders may hold a random generator; it is seeded once at construction, so a run is repeatable.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class DirectEncoder(nn.Module):
    """The same analog image at every time step."""

    constant_in_time = True
    emits_events = False

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:
        return images.unsqueeze(0).expand(time_steps, *images.shape)

    def reset_state(self) -> None:
        """Direct coding has no state."""


class OwnGenerator:
    """A module that draws from a generator of its own, seeded once (`seed`), whose state a
    checkpoint keeps (`random_state`, `set_random_state`) so that a resumed run draws the same."""

    seed: int = 0
    _generator: torch.Generator | None = None

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def random_state(self) -> torch.Tensor | None:
        """The generator's state, for a checkpoint (None before the first draw)."""
        return None if self._generator is None else self._generator.get_state()

    def set_random_state(self, state: torch.Tensor | None) -> None:
        """Continue from a `random_state()` (None: from the seed again), on the device of the
        generator in use when the state fits it, else on the CPU; a state that fits neither (saved
        on another kind of device) cannot be continued here, and the draws start from the seed."""
        if state is None:
            self._generator = None
            return
        device = self._generator.device if self._generator is not None else torch.device("cpu")
        for candidate in dict.fromkeys([device, torch.device("cpu")]):
            generator = torch.Generator(device=candidate)
            try:
                generator.set_state(state)
            except RuntimeError:  # a state of another kind of generator
                continue
            self._generator = generator
            return
        warnings.warn(
            f"{type(self).__name__}: a random state saved on another kind of device cannot be continued "
            "here; its draws start again from the seed",
            stacklevel=2,
        )
        self._generator = None


class PoissonEncoder(OwnGenerator, nn.Module):
    """Signed Bernoulli spikes whose mean over time is the image."""

    constant_in_time = False
    emits_events = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self._generator = None

    def forward(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:
        amplitude = images.detach().abs().flatten(1).amax(1).clamp(min=1e-12)
        amplitude = amplitude.view(-1, *([1] * (images.ndim - 1)))
        probability = images.abs() / amplitude
        uniform = torch.rand(
            (time_steps, *images.shape),
            generator=self._generator_for(images.device),
            device=images.device,
            dtype=images.dtype,
        )
        return (uniform < probability).to(images.dtype) * amplitude * images.sign()

    def reset_state(self) -> None:
        """The generator runs on across batches: each batch draws fresh spikes."""


ENCODERS = {"direct": DirectEncoder, "poisson": PoissonEncoder}


def build_encoder(name: str, seed: int = 0) -> nn.Module:
    if name == "poisson":
        return PoissonEncoder(seed)
    if name == "direct":
        return DirectEncoder()
    raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
