"""Operation counters for the harness: synaptic operations (SOPs), MACs and an energy estimate.

A synaptic layer is an `nn.Conv2d` or `nn.Linear`. Its input `[T*B, ...]` is either events
(spikes, possibly pooled) or analog values (the image under direct coding, or any layer of an
ANN):
- events: SOPs at step t = sum over input positions of [input != 0] * fan-out(position), where
  a convolution's fan-out counts exactly the outputs a position reaches given kernel, stride,
  padding and dilation (border positions reach fewer), times out_channels / groups. When the
  input is a neuron layer's output, its events are that layer's spike map from the
  `SpikeRecorder` (spikes per neuron summed over the batch), so they are not counted again for
  every layer the spikes feed;
- analog: dense MACs = output elements * (in_channels / groups) * kernel area (per sample, per
  step), the usual count that includes the padded border.
Energy follows the 45 nm convention (Horowitz 2014): 4.6 pJ per MAC, 0.9 pJ per accumulate. It
counts compute only, no memory traffic.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.spiking.fused import is_dense
from bench.spiking.neurons import SpikingNeuron

# The torch.profiler event that covers the counting (`bench.studies.speed` reads it).
PROFILER_EVENT = "spikebench: counters"
PJ_PER_MAC = 4.6
PJ_PER_AC = 0.9
ENERGY_CAVEAT = "compute only (45 nm: 4.6 pJ/MAC, 0.9 pJ/AC, Horowitz 2014); memory traffic is not counted"


class SpikeRecorder:
    """Spike hooks on every neuron layer of a model: `spike_maps[name]` holds the last call's
    spikes per neuron and step summed over the batch, `[T, ...]` (float32, exact)."""

    def __init__(self, model: nn.Module) -> None:
        self.spike_maps: dict[str, torch.Tensor] = {}
        self.names = {id(m): name for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}
        self._handles = [m.register_spike_hook(self._record) for m in model.modules() if isinstance(m, SpikingNeuron)]

    def _record(self, neuron: SpikingNeuron, spikes: torch.Tensor) -> None:
        with torch.profiler.record_function(PROFILER_EVENT):
            self.spike_maps[self.names[id(neuron)]] = sum_over_batch(spikes)

    def spike_counts(self) -> dict[str, torch.Tensor]:
        """Spikes per step of the last call of each layer, summed over batch and neurons, `[T]`."""
        return {name: self.spike_maps[name].flatten(1).sum(1) for name in self._recorded()}

    def neurons_per_sample(self) -> dict[str, int]:
        return {name: self.spike_maps[name][0].numel() for name in self._recorded()}

    def _recorded(self) -> list[str]:
        """Names of the recorded layers, in the model's order of modules."""
        return [name for name in self.names.values() if name in self.spike_maps]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def sum_over_batch(sequence: torch.Tensor) -> torch.Tensor:
    """`[T, B, ...]` -> `[T, ...]` in float32, summed over the batch; exact for spikes (sums < 2^24).

    On a CPU the sum is a matrix-vector product over each step's `[B, per_sample]` block: it
    reads the spikes once at memory speed, about twice as fast as `sum(1)` over a channels-last
    layout. The result keeps the layout of one sample.
    """
    steps, batch = sequence.shape[:2]
    per_sample = sequence[0, 0].numel()
    one_block = sequence.stride(1) == per_sample and sequence.stride(0) == batch * per_sample
    on_cpu = sequence.device.type == "cpu" and sequence.dtype == torch.float32
    if not (on_cpu and one_block and is_dense(sequence[0, 0])):
        return sequence.sum(1, dtype=torch.float32)
    blocks = sequence.as_strided((steps, batch, per_sample), (batch * per_sample, per_sample, 1))
    summed = torch.matmul(blocks.new_ones(batch), blocks)  # [T, per_sample]
    return summed.as_strided((steps, *sequence.shape[2:]), (per_sample, *sequence.stride()[2:]))


def synaptic_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def conv_fan_out(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """`[H, W]`: how many outputs of one output channel each input position reaches."""
    out_height = (height + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
    out_width = (width + 2 * conv.padding[1] - conv.dilation[1] * (conv.kernel_size[1] - 1) - 1) // conv.stride[1] + 1
    ones = torch.ones(1, 1, out_height, out_width)
    kernel = torch.ones(1, 1, *conv.kernel_size)
    # Spread over the padded input, then crop the padding; rows the last stride never reaches stay 0.
    spread = F.conv_transpose2d(ones, kernel, stride=conv.stride, dilation=conv.dilation)[0, 0]
    spread = spread[conv.padding[0] : conv.padding[0] + height, conv.padding[1] : conv.padding[1] + width]
    cover = torch.zeros(height, width)
    cover[: spread.shape[0], : spread.shape[1]] = spread
    return cover


def dense_macs(layer: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> int:
    """MACs of one sample through `layer`, given a batch of its inputs and outputs."""
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
    return outputs[0].numel() * per_output


@dataclass
class LayerCount:
    kind: str  # "sop" or "mac"
    per_step: torch.Tensor  # [steps], summed over the batch


class OperationCounter:
    """Hooks on every synaptic layer of a model; `counts` holds the last call's per-step totals.

    `analog_input` is the tensor the model's body received when its input is analog (direct
    coding); a layer fed that very tensor counts MACs. Everything else in a spiking model counts
    SOPs, and every layer of a time-invariant model (an ANN) counts MACs. Layers fed by a neuron
    read its events from `spikes` (a `SpikeRecorder` on the same model) when one is given.
    Call `start_call(time_steps, batch_size)` before every call of the model.
    """

    def __init__(self, model: nn.Module, all_dense: bool = False, spikes: SpikeRecorder | None = None) -> None:
        self.layers = synaptic_layers(model)
        self.all_dense = all_dense
        self.spikes = spikes
        self.time_steps = 1
        self.batch_size = 1
        self.analog_input: torch.Tensor | None = None
        self.counts: dict[str, LayerCount] = {}
        self.dense_macs_per_sample: dict[str, int] = {}
        self._fan_out: dict[tuple[str, int, int], torch.Tensor] = {}
        # id(output) -> (the output, the name of the neuron layer that emitted it) for outputs still alive.
        self._spike_sources: dict[int, tuple[weakref.ref, str]] = {}
        self._handles = [layer.register_forward_hook(self._hook(name)) for name, layer in self.layers.items()]
        if spikes is not None:
            self._handles += [
                m.register_forward_hook(self._remember_spikes(name))
                for name, m in model.named_modules()
                if isinstance(m, SpikingNeuron)
            ]
        body, encoder = getattr(model, "body", None), getattr(model, "encoder", None)
        if body is not None and encoder is not None and not getattr(encoder, "emits_events", True):
            self._handles.append(body.register_forward_pre_hook(self._remember_analog_input))

    def start_call(self, time_steps: int, batch_size: int) -> None:
        """The next call of the model runs `time_steps` steps on `batch_size` samples."""
        self.time_steps, self.batch_size = time_steps, batch_size

    def _remember_analog_input(self, body, inputs) -> None:
        self.analog_input = inputs[0]

    def _remember_spikes(self, name: str):
        def remember(neuron: SpikingNeuron, inputs, output: torch.Tensor) -> None:
            # An event is a nonzero input: a spike of amplitude 1, or of a threshold that is not 0.
            if neuron.emits_events():
                self._spike_sources = {
                    key: entry for key, entry in self._spike_sources.items() if entry[0]() is not None
                }
                self._spike_sources[id(output)] = (weakref.ref(output), name)

        return remember

    def _recorded_spikes(self, source: torch.Tensor) -> torch.Tensor | None:
        """The spike map `[T, ...]` of the neuron layer whose output `source` is, if it was recorded."""
        entry = self._spike_sources.get(id(source))
        if entry is None or entry[0]() is not source:
            return None
        spike_map = self.spikes.spike_maps.get(entry[1])
        return spike_map if spike_map is not None and spike_map.shape[0] == self.time_steps else None

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        def count(layer, inputs, outputs):
            with torch.profiler.record_function(PROFILER_EVENT):
                self._count(name, layer, inputs, outputs)

        return count

    def _count(self, name: str, layer: nn.Module, inputs, outputs) -> None:
        (source,) = inputs
        macs = dense_macs(layer, source, outputs)
        self.dense_macs_per_sample[name] = macs
        # Analog: an ANN, the encoder's own output, or a layer of the constant prefix that runs once
        # on `[B, ...]` before the first neuron (`SpikingNetwork.constant_prefix`).
        analog = self.analog_input is not None and source.data_ptr() == self.analog_input.data_ptr()
        if self.all_dense or analog or source.shape[0] != self.time_steps * self.batch_size:
            steps = torch.full((self.time_steps,), float(macs * self.batch_size))
            self.counts[name] = LayerCount("mac", steps)
        else:
            self.counts[name] = LayerCount("sop", self._sops(name, layer, source))

    def _sops(self, name: str, layer: nn.Module, source: torch.Tensor) -> torch.Tensor:
        events = self._recorded_spikes(source)  # [steps, ...], summed over the batch
        if events is None:
            steps = source.detach().unflatten(0, (self.time_steps, -1))
            # A float 0/1 mask sums much faster than a bool one on CPUs, and stays exact: no sum
            # here comes near 2^24.
            events = sum_over_batch(torch.ne(steps, 0, out=torch.empty_like(steps, dtype=torch.float32)))
        if isinstance(layer, nn.Linear):
            return events.flatten(1).sum(1).double() * layer.out_features
        per_position = events.sum(dim=1).double()  # [steps, H, W]
        key = (name, source.shape[-2], source.shape[-1])
        if key not in self._fan_out:
            self._fan_out[key] = conv_fan_out(layer, *key[1:]).double().to(source.device) * (
                layer.out_channels // layer.groups
            )
        return (per_position * self._fan_out[key]).sum(dim=(1, 2))


def energy_microjoules(macs: float, sops: float, pj_per_mac: float = PJ_PER_MAC, pj_per_ac: float = PJ_PER_AC) -> float:
    return (macs * pj_per_mac + sops * pj_per_ac) * 1e-6
