"""Spiking primitives shared by every method: surrogates, neurons, encoders, the model contract.

Shapes, once for the package: sequences are time-major, `[T, B, ...]`. An encoder turns images
`[B, C, H, W]` into `[T, B, C, H, W]`; stateless layers (convolutions, batch norm, pooling,
additions) run on the flattened `[T*B, ...]`, so batch norm takes its statistics over time and
batch together; a model returns `[T, B, K]`.

The neuron contract (`SpikingNeuron`, in `bench.spiking.neurons`):
- Input and output. `neuron.run_sequence(current)` maps currents `[T, B, ...]` to outputs
  `[T, B, ...]` (binary spikes, times the threshold with `spike_amplitude="threshold"`). Inside
  a body the neuron is called like any layer on `[T*B, ...]`, and reads T from the `TimeLayout`
  that the network sets for the duration of the call (`bench.spiking.layout`): nothing sets an
  attribute on a neuron from outside.
- State. The attributes named in `state_names` (for every neuron: `potential`, `[B, ...]`) are
  carried from one call to the next, so a long simulation can run in time chunks. State is per
  sample. `reset_state()` clears it; `SpikingModel.reset_state()` clears every `Stateful`
  module it contains, and the harness and the trainers call it before every batch.
- Observation. `neuron.register_spike_hook(hook)` calls `hook(neuron, spikes [T, B, ...])` after
  every call; the harness registers its recorders this way and removes them when done.
- A new neuron is a subclass that defines one time step, `step(current [B, ...], potential,
  threshold) -> (spikes, potential)`, and, if it starts elsewhere than
  `initial_potential * threshold`, `fresh_potential`. The base class loops over time, carries and
  resets the state and calls the hooks. For example, an IF neuron that starts at half threshold:

      class HalfStartIF(SpikingNeuron):
          def fresh_potential(self, like, threshold):
              return torch.zeros_like(like) + 0.5 * threshold

          def step(self, current, potential, threshold):
              potential = potential + current
              spikes = (potential >= threshold).to(current.dtype)   # or spike(x, surrogate) to train
              return spikes, potential - spikes * threshold

  `LIFNeuron` is such a subclass with a fused time loop for speed (`bench.spiking.fused`).
"""

from bench.spiking.encoders import DirectEncoder, PoissonEncoder, build_encoder
from bench.spiking.layout import TimeLayout, current_layout, time_layout
from bench.spiking.network import AnalogModel, SpikingModel, SpikingNetwork, replace_modules, replace_relus
from bench.spiking.neurons import IFNeuron, LIFNeuron, ParametricLIFNeuron, SpikingNeuron, Stateful
from bench.spiking.normalization import ThresholdDependentBatchNorm, pre_addition_norms
from bench.spiking.surrogates import SURROGATES, Surrogate, list_surrogates, register_surrogate, spike

__all__ = [
    "SURROGATES",
    "AnalogModel",
    "DirectEncoder",
    "IFNeuron",
    "LIFNeuron",
    "ParametricLIFNeuron",
    "PoissonEncoder",
    "SpikingModel",
    "SpikingNetwork",
    "SpikingNeuron",
    "Stateful",
    "Surrogate",
    "ThresholdDependentBatchNorm",
    "pre_addition_norms",
    "TimeLayout",
    "build_encoder",
    "current_layout",
    "list_surrogates",
    "register_surrogate",
    "replace_modules",
    "replace_relus",
    "spike",
    "time_layout",
]
