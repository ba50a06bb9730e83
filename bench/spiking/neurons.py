"""Integrate-and-fire (IF) and leaky integrate-and-fire (LIF) neurons over time.

Convention, once for the whole package: sequences are time-major, `[T, B, ...]`. Stateless layers
(convolutions, batch norm, pooling, additions) run on the flattened batch `[T*B, ...]`; a neuron
receives that flattened input current, views it as `[T, B, ...]`, and is the only module that
loops over time. Its `time_steps` is set by the `SpikingNetwork` that owns it before each call.

Dynamics per step t, with leak factor `leak` in (0, 1] (leak = 1 is IF):

    v[t] = leak * v[t-1] + I[t]
    s[t] = H(v[t] - threshold)                  (surrogate gradient backward)
    v[t] = v[t] - s[t] * threshold              reset="subtract"
    v[t] = v[t] * (1 - s[t])                    reset="zero"

The membrane potential starts at `initial_potential * threshold` and is carried across calls
until `reset_state()`; the harness and the trainers reset it before every batch. `threshold`
is a scalar or one value per channel (dimension 1 of `[B, C, ...]`). The output is the spike
times `spike_amplitude`: 1 (binary spikes) or the threshold itself ("threshold"), which lets a
threshold-balanced network feed the next layer the same signal as a weight-normalized one.

The time loop runs fused (`bench.spiking.fused`: one autograd node for the whole sequence, the
same outputs and gradients); `fused=False` keeps the plain loop, one autograd graph per step.
Carried state keeps its gradient in both. A threshold that requires grad uses the plain loop.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from bench.spiking.fused import Dynamics, is_dense, simulate
from bench.spiking.surrogates import Surrogate, spike

ResetMode = Literal["subtract", "zero"]


class LIFNeuron(nn.Module):
    """Leaky integrate-and-fire neuron layer on flattened `[T*B, ...]` currents."""

    def __init__(
        self,
        threshold: float | torch.Tensor = 1.0,
        leak: float = 1.0,
        reset: ResetMode = "subtract",
        initial_potential: float = 0.0,
        surrogate: Surrogate | None = None,
        detach_reset: bool = False,
        spike_amplitude: Literal["one", "threshold"] = "one",
        fused: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < leak <= 1:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32).clone())
        self.leak = leak
        self.reset = reset
        self.initial_potential = initial_potential
        self.surrogate = surrogate or Surrogate()
        self.detach_reset = detach_reset
        self.spike_amplitude = spike_amplitude
        self.time_steps = 1
        # The fused loop of `bench.spiking.fused` (same outputs and gradients); False runs the
        # plain loop below, one autograd graph per step, kept as the reference.
        self.fused = fused
        # Set by a `SpikingNetwork` whose input is constant in time: an input of this many rows
        # is one current `[B, ...]` held for all `time_steps`, computed once instead of T times.
        self.constant_batch: int | None = None
        self.potential: torch.Tensor | None = None
        # Spikes of every neuron per step of the last call, summed over the batch, `[T, ...]`
        # (float32); kept only while `record` is on, so that training pays nothing for it.
        self.record = False
        self.spike_map: torch.Tensor | None = None

    def extra_repr(self) -> str:
        threshold = self.threshold.item() if self.threshold.numel() == 1 else f"[{self.threshold.numel()} channels]"
        return (
            f"threshold={threshold}, leak={self.leak}, reset={self.reset}, "
            f"initial_potential={self.initial_potential}, surrogate={self.surrogate}"
        )

    @property
    def spike_counts(self) -> torch.Tensor | None:
        """Spikes per step of the last call, summed over batch and neurons, `[T]`."""
        return None if self.spike_map is None else self.spike_map.flatten(1).sum(1)

    def reset_state(self) -> None:
        self.potential = None
        self.spike_map = None

    def _broadcast_threshold(self, step_current: torch.Tensor) -> torch.Tensor:
        if self.threshold.ndim == 0:
            return self.threshold.to(step_current.dtype)
        trailing = step_current.ndim - 2
        return self.threshold.to(step_current.dtype).view(-1, *([1] * trailing))

    def _initial_potential(self, step_current: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        if self.potential is None:
            return torch.zeros_like(step_current) + self.initial_potential * threshold
        if self.potential.shape != step_current.shape:
            raise RuntimeError(
                f"neuron state has shape {tuple(self.potential.shape)} but the input step has "
                f"{tuple(step_current.shape)}: call reset_state() between batches"
            )
        return self.potential

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        current = self._time_major(current)
        threshold = self._broadcast_threshold(current[0])
        if self.fused and not self.threshold.requires_grad:
            dynamics = Dynamics(self.leak, self.reset, self.detach_reset, self.surrogate, self.initial_potential)
            carried = None if self.potential is None else self._initial_potential(current[0], threshold)
            spikes, potential = simulate(current, carried, threshold, dynamics)
        else:
            potential = self._initial_potential(current[0], threshold)
            spikes, potential = self._plain_loop(current, potential, threshold)
        self.potential = potential
        if self.record:
            self.spike_map = sum_over_batch(spikes.detach())
        if self.spike_amplitude == "threshold":
            spikes = spikes * threshold if spikes.requires_grad else spikes.mul_(threshold)
        return spikes.flatten(0, 1)

    def _time_major(self, current: torch.Tensor) -> torch.Tensor:
        """`[T*B, ...]` -> `[T, B, ...]`; a constant `[B, ...]` current becomes an expanded view."""
        if self.constant_batch is not None and self.time_steps > 1 and current.shape[0] == self.constant_batch:
            return current.unsqueeze(0).expand(self.time_steps, *current.shape)
        return current.unflatten(0, (self.time_steps, -1))

    def _plain_loop(self, current: torch.Tensor, potential: torch.Tensor, threshold: torch.Tensor):
        spikes = []
        for step_current in current:
            potential = self.leak * potential + step_current
            step_spikes = spike(potential - threshold, self.surrogate)
            reset_spikes = step_spikes.detach() if self.detach_reset else step_spikes
            if self.reset == "subtract":
                potential = potential - reset_spikes * threshold
            else:
                potential = potential * (1 - reset_spikes)
            spikes.append(step_spikes)
        return torch.stack(spikes), potential


def sum_over_batch(sequence: torch.Tensor) -> torch.Tensor:
    """`[T, B, ...]` -> `[T, ...]` in float32, summed over the batch; exact for spikes (sums < 2^24).

    On a CPU the sum is a matrix-vector product over each step's `[B, per_sample]` block: it
    reads the spikes once at memory speed, about twice as fast as `sum(1)` over a channels-last
    layout. The result keeps the layout of one sample.
    """
    steps, batch = sequence.shape[:2]
    per_sample = sequence[0, 0].numel()
    one_block = sequence.stride(1) == per_sample and sequence.stride(0) == batch * per_sample
    if sequence.device.type != "cpu" or sequence.dtype != torch.float32 or not one_block or not is_dense(sequence[0, 0]):
        return sequence.sum(1, dtype=torch.float32)
    blocks = sequence.as_strided((steps, batch, per_sample), (batch * per_sample, per_sample, 1))
    summed = torch.matmul(blocks.new_ones(batch), blocks)  # [T, per_sample]
    return summed.as_strided((steps, *sequence.shape[2:]), (per_sample, *sequence.stride()[2:]))


class IFNeuron(LIFNeuron):
    """Integrate-and-fire neuron: a LIF neuron without leak."""

    def __init__(self, threshold: float | torch.Tensor = 1.0, **kwargs) -> None:
        super().__init__(threshold=threshold, leak=1.0, **kwargs)
