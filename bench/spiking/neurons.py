"""Neuron layers: `SpikingNeuron`, the base every neuron extends, and the LIF/IF neurons.

The contract (shapes, state, who resets it, hooks) is written once in `bench.spiking`. In short:
a neuron maps currents `[T, B, ...]` to spikes `[T, B, ...]` (`run_sequence`), or, inside a
body, flattened `[T*B, ...]` to `[T*B, ...]` (`forward`, reading T from the call's
`TimeLayout`); its state is the attributes named in `state_names`, carried from call to call
and cleared by `reset_state()`.

LIF dynamics per step t, with leak factor `leak` in (0, 1] (leak = 1 is IF):

    v[t] = leak * v[t-1] + I[t]
    s[t] = H(v[t] - threshold)                  (surrogate gradient backward)
    v[t] = v[t] - s[t] * threshold              reset_mode="subtract"
    v[t] = v[t] * (1 - s[t])                    reset_mode="zero"

The membrane potential starts at `initial_potential * threshold`. `threshold` is a scalar or one
value per channel (dimension 1 of `[B, C, ...]`). The output is the spikes times
`spike_amplitude`: 1 (binary spikes) or the threshold itself ("threshold"), which lets a
threshold-balanced network feed the next layer the same signal as a weight-normalized one.

`LIFNeuron` runs its time loop fused (`bench.spiking.fused`: one autograd node for the whole
sequence, the same outputs and gradients); `fused=False` keeps the plain loop over `step`, one
autograd graph per step. A learned threshold (`learn_threshold=True`), or a subclass that
overrides `step`, uses the plain loop; a subclass that only changes `fresh_potential` keeps the
fused one. `ParametricLIFNeuron` (PLIF) learns its leak.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from bench.spiking.fused import Dynamics, simulate
from bench.spiking.layout import current_layout
from bench.spiking.surrogates import Surrogate, spike

ResetMode = Literal["subtract", "zero"]
SpikeHook = Callable[["SpikingNeuron", torch.Tensor], None]
# The torch.profiler event that covers every neuron's time loop (`bench.studies.speed` reads it).
PROFILER_EVENT = "spikebench: neuron"


class Stateful:
    """A module whose state lives between calls in the attributes named by `state_names`.

    `reset_state()` sets each to None (a fresh state, built on the next call);
    `SpikingModel.reset_state()` calls it on every stateful module it contains.
    """

    state_names: tuple[str, ...] = ()

    def reset_state(self) -> None:
        for name in self.state_names:
            setattr(self, name, None)

    def state_snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.state_names}

    def restore_state(self, snapshot: dict[str, Any]) -> None:
        for name in self.state_names:
            setattr(self, name, snapshot[name])


class SpikingNeuron(Stateful, nn.Module):
    """Base of every neuron layer: subclasses define one time `step` (and may change
    `fresh_potential`, or the whole loop in `integrate`)."""

    state_names = ("potential",)

    def __init__(
        self,
        threshold: float | torch.Tensor = 1.0,
        initial_potential: float = 0.0,
        spike_amplitude: Literal["one", "threshold"] = "one",
        learn_threshold: bool = False,
    ) -> None:
        super().__init__()
        if spike_amplitude not in ("one", "threshold"):
            raise ValueError(f"spike_amplitude must be 'one' or 'threshold', got {spike_amplitude!r}")
        value = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        if learn_threshold:
            self.threshold = nn.Parameter(value)
        else:
            self.register_buffer("threshold", value)
        self.initial_potential = initial_potential
        self.spike_amplitude = spike_amplitude
        self._spike_hooks: OrderedDict[int, SpikeHook] = OrderedDict()
        self.potential: torch.Tensor | None = None

    # --- what a subclass defines ----------------------------------------------------------------

    def step(self, current: torch.Tensor, potential: torch.Tensor, threshold: torch.Tensor):
        """One time step on `[B, ...]`: (binary spikes, next potential)."""
        raise NotImplementedError(f"{type(self).__name__} must define step()")

    def fresh_potential(self, like: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """The potential `[B, ...]` a reset neuron starts from: `initial_potential * threshold`."""
        return torch.zeros_like(like) + self.initial_potential * threshold

    def integrate(self, current: torch.Tensor, threshold: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        """Binary spikes `[T, B, ...]` for currents `[T, B, ...]`, from and into `self.potential`.

        Under mixed precision (half or bfloat16 currents) the potential is kept in float32, as in the
        fused loop: summed in bfloat16, small currents would vanish against a large potential."""
        precise = torch.float32 if current.dtype in (torch.float16, torch.bfloat16) else current.dtype
        threshold = threshold.to(precise)  # once, not at every step
        potential = self.carried_potential(current[0].to(precise), threshold).to(precise)
        spikes = []
        for step_current in current:
            step_spikes, potential = self.step(step_current.to(precise), potential, threshold)
            spikes.append(step_spikes)
        self.potential = potential
        return torch.stack(spikes).to(current.dtype)

    # --- the contract every neuron shares -------------------------------------------------------

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        """Flattened currents `[T*B, ...]` (T from the call's `TimeLayout`) -> outputs `[T*B, ...]`."""
        layout = current_layout()
        outputs = self.run_sequence(layout.time_major(current), compiled=layout.compiled, observed=layout.observed)
        return outputs.flatten(0, 1)

    def run_sequence(self, current: torch.Tensor, *, compiled: bool = False, observed: bool = True) -> torch.Tensor:
        """Currents `[T, B, ...]` -> spikes times the amplitude `[T, B, ...]`; the state carries on."""
        threshold = self.broadcast_threshold(current[0])
        with torch.profiler.record_function(PROFILER_EVENT):
            spikes = self.integrate(current, threshold, compiled)
        if observed:
            for hook in tuple(self._spike_hooks.values()):
                hook(self, spikes.detach())
        if self.spike_amplitude == "threshold":
            spikes = spikes * threshold if spikes.requires_grad else spikes.mul_(threshold)
        return spikes

    def register_spike_hook(self, hook: SpikeHook) -> RemovableHandle:
        """Call `hook(neuron, spikes)` after every observed call, spikes binary `[T, B, ...]`
        (detached; read them, do not keep or modify them). `handle.remove()` stops it."""
        handle = RemovableHandle(self._spike_hooks)
        self._spike_hooks[handle.id] = hook
        return handle

    def broadcast_threshold(self, step_current: torch.Tensor) -> torch.Tensor:
        """The threshold shaped to broadcast against one step `[B, C, ...]`."""
        threshold = self.threshold.to(step_current.dtype)
        if threshold.ndim == 0:
            return threshold
        return threshold.view(-1, *([1] * (step_current.ndim - 2)))

    def carried_potential(self, like: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """The potential carried from the last call, or a fresh one after `reset_state()`."""
        if self.potential is None:
            return self.fresh_potential(like, threshold)
        if self.potential.shape != like.shape:
            raise RuntimeError(
                f"neuron state has shape {tuple(self.potential.shape)} but the input step has "
                f"{tuple(like.shape)}: call reset_state() between batches"
            )
        return self.potential

    def emits_events(self) -> bool:
        """Whether every spike is a nonzero output (a threshold amplitude of 0 would hide one).
        Read from the device once per value of the threshold, not at every call (a GPU sync)."""
        if self.spike_amplitude == "one":
            return True
        key = (self.threshold.data_ptr(), self.threshold._version)
        if getattr(self, "_emits_events_key", None) != key:
            self._emits_events_key, self._emits_events = key, bool(self.threshold.ne(0).all())
        return self._emits_events


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire neuron (the module docstring's dynamics)."""

    def __init__(
        self,
        threshold: float | torch.Tensor = 1.0,
        leak: float = 1.0,
        reset_mode: ResetMode = "subtract",
        initial_potential: float = 0.0,
        surrogate: Surrogate | None = None,
        detach_reset: bool = False,
        spike_amplitude: Literal["one", "threshold"] = "one",
        fused: bool = True,
        learn_threshold: bool = False,
    ) -> None:
        super().__init__(threshold, initial_potential, spike_amplitude, learn_threshold)
        if not 0 < leak <= 1:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        if reset_mode not in ("subtract", "zero"):
            raise ValueError(f"reset_mode must be 'subtract' or 'zero', got {reset_mode!r}")
        self.leak = leak
        self.reset_mode = reset_mode
        self.surrogate = surrogate or Surrogate()
        self.detach_reset = detach_reset
        self.fused = fused

    def extra_repr(self) -> str:
        threshold = self.threshold.item() if self.threshold.numel() == 1 else f"[{self.threshold.numel()} channels]"
        return (
            f"threshold={threshold}, leak={self.leak}, reset_mode={self.reset_mode}, "
            f"initial_potential={self.initial_potential}, surrogate={self.surrogate}"
        )

    def step(self, current: torch.Tensor, potential: torch.Tensor, threshold: torch.Tensor):
        return self.fire(self.leak * potential + current, threshold)

    def fire(self, potential: torch.Tensor, threshold: torch.Tensor):
        """(spikes where `potential` reaches the threshold, the potential after their reset)."""
        spikes = spike(potential - threshold, self.surrogate)
        reset_spikes = spikes.detach() if self.detach_reset else spikes
        if self.reset_mode == "subtract":
            return spikes, potential - reset_spikes * threshold
        return spikes, potential * (1 - reset_spikes)

    def integrate(self, current: torch.Tensor, threshold: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        if not self._fusable():
            return super().integrate(current, threshold, compiled)
        dynamics = Dynamics(self.leak, self.reset_mode, self.detach_reset, self.surrogate, self.initial_potential)
        own_start = type(self).fresh_potential is not SpikingNeuron.fresh_potential
        carried = None if self.potential is None and not own_start else self.carried_potential(current[0], threshold)
        spikes, self.potential = simulate(current, carried, threshold, dynamics, compiled=compiled)
        return spikes

    def _fusable(self) -> bool:
        """The fused loop computes exactly this class's `step` (from any fresh potential)."""
        return self.fused and type(self).step is LIFNeuron.step and not self.threshold.requires_grad


class IFNeuron(LIFNeuron):
    """Integrate-and-fire neuron: a LIF neuron without leak."""

    def __init__(self, threshold: float | torch.Tensor = 1.0, **kwargs) -> None:
        super().__init__(threshold=threshold, leak=1.0, **kwargs)


class ParametricLIFNeuron(LIFNeuron):
    """PLIF (Fang et al., ICCV 2021): v[t] = v[t-1] + k * (I[t] - v[t-1]) with k = 1/tau = sigmoid(w),
    one learned w per layer, starting at tau = `initial_tau`; then the spike and reset of `LIFNeuron`.

    Without autograd it is a LIF neuron with leak 1 - k fed k * I, so it simulates in the fused loop.
    """

    def __init__(self, initial_tau: float = 2.0, **kwargs) -> None:
        if not initial_tau > 1:
            raise ValueError(f"initial_tau must be above 1, got {initial_tau}")
        super().__init__(**kwargs)
        self.leak_weight = nn.Parameter(torch.tensor(-math.log(initial_tau - 1.0)))

    def extra_repr(self) -> str:
        return f"tau={1 / torch.sigmoid(self.leak_weight.detach()).item():.3g}, " + super().extra_repr()

    def step(self, current: torch.Tensor, potential: torch.Tensor, threshold: torch.Tensor):
        return self.fire(potential + torch.sigmoid(self.leak_weight) * (current - potential), threshold)

    def _leak_rate(self) -> float:
        """1 / tau as a number, read from the device once per value of the weight (a GPU sync)."""
        key = (self.leak_weight.data_ptr(), self.leak_weight._version)
        if getattr(self, "_leak_rate_key", None) != key:
            self._leak_rate_key, self._leak_rate_value = key, torch.sigmoid(self.leak_weight.detach()).item()
        return self._leak_rate_value

    def integrate(self, current: torch.Tensor, threshold: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        if torch.is_grad_enabled() or not self.fused or self.threshold.requires_grad:
            return SpikingNeuron.integrate(self, current, threshold, compiled)
        rate = self._leak_rate()
        dynamics = Dynamics(1.0 - rate, self.reset_mode, self.detach_reset, self.surrogate, self.initial_potential)
        carried = None if self.potential is None else self.carried_potential(current[0], threshold)
        # A current constant in time stays one `[B, ...]` tensor, expanded (the time-constant prefix).
        scaled = (current[0] * rate).expand_as(current) if current.stride(0) == 0 else current * rate
        spikes, self.potential = simulate(scaled, carried, threshold, dynamics)
        return spikes
