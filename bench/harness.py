"""The harness: simulate a spiking model once up to T_max and read accuracy at every T of the grid.

For each test batch `[B, C, H, W]` the model is reset, then run in time chunks of `chunk_size`
steps (outputs `[chunk, B, K]`); the running sum of outputs is the readout, so the prediction at
T is the argmax of the sum of the first T outputs, the same as a separate T-step simulation.
Spikes are counted per layer and per step on the way. A time-invariant model (an ANN) is run
for one step and holds its accuracy at every T.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from bench.progress import QUIET
from bench.spiking import SpikingModel


@dataclass
class Evaluation:
    """Accuracy and firing at each T of the grid; rates are spikes per neuron per step."""

    time_steps: list[int]
    num_samples: int = 0
    top1: dict[int, float] = field(default_factory=dict)
    top5: dict[int, float] | None = None
    firing_rates: dict[int, dict[str, float]] = field(default_factory=dict)
    spikes_per_neuron: dict[int, float] = field(default_factory=dict)
    neurons_per_sample: dict[str, int] = field(default_factory=dict)
    chunk_size: int = 0
    wall_s: float = 0.0


class _Tally:
    """Running counts over batches: correct predictions and spikes at each T of the grid."""

    def __init__(self, grid: list[int], layers: list[str], with_top5: bool) -> None:
        self.grid = grid
        self.correct1 = dict.fromkeys(grid, 0)
        self.correct5 = dict.fromkeys(grid, 0) if with_top5 else None
        self.spikes = {t: dict.fromkeys(layers, 0.0) for t in grid}
        self.neurons: dict[str, int] = {}
        self.samples = 0

    def score(self, time_step: int, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct1[time_step] += (scores.argmax(1) == labels).sum().item()
        if self.correct5 is not None:
            top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
            self.correct5[time_step] += (top5 == labels[:, None]).any(1).sum().item()

    def result(self, evaluation: Evaluation) -> Evaluation:
        samples = max(self.samples, 1)
        evaluation.num_samples = self.samples
        evaluation.top1 = {t: self.correct1[t] / samples for t in self.grid}
        if self.correct5 is not None:
            evaluation.top5 = {t: self.correct5[t] / samples for t in self.grid}
        evaluation.neurons_per_sample = dict(self.neurons)
        total_neurons = sum(self.neurons.values())
        for t in self.grid:
            evaluation.firing_rates[t] = {
                name: spikes / (self.neurons[name] * samples * t) for name, spikes in self.spikes[t].items() if self.neurons.get(name)
            }
            evaluation.spikes_per_neuron[t] = sum(self.spikes[t].values()) / (total_neurons * samples) if total_neurons else 0.0
        return evaluation


@torch.no_grad()
def evaluate(
    model: SpikingModel,
    loader,
    time_steps: list[int],
    device: torch.device,
    *,
    chunk_size: int | None = None,
    memory_budget_mb: int = 2048,
    num_classes: int | None = None,
    reporter=QUIET,
    description: str = "simulate",
) -> Evaluation:
    """Accuracy at every T in `time_steps` from one simulation of max(time_steps) steps."""
    grid = sorted(set(time_steps))
    model = model.to(device).eval()
    layers = model.spiking_layers()
    horizon = 1 if model.time_invariant else grid[-1]
    tally: _Tally | None = None
    evaluation = Evaluation(time_steps=grid)
    started = time.perf_counter()
    for neuron in layers.values():
        neuron.record = True
    try:
        with reporter.task(description, total=len(loader)) as task:
            for images, labels in loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                if not evaluation.chunk_size:
                    evaluation.chunk_size = chunk_size or choose_chunk_size(model, images, horizon, memory_budget_mb)
                if tally is None:
                    model.reset_state()
                    classes = num_classes or model(images[:1], 1).shape[-1]
                    tally = _Tally(grid, list(layers), with_top5=classes >= 100)
                _simulate_batch(model, layers, images, labels, horizon, evaluation.chunk_size, tally)
                task.advance(acc=tally.correct1[grid[-1]] / tally.samples)
    finally:
        for neuron in layers.values():
            neuron.record = False
        model.reset_state()
    evaluation.wall_s = time.perf_counter() - started
    return tally.result(evaluation) if tally else evaluation


def _simulate_batch(model, layers, images, labels, horizon: int, chunk_size: int, tally: _Tally) -> None:
    model.reset_state()
    readout = None
    spikes_so_far = dict.fromkeys(layers, 0.0)
    done = 0
    while done < horizon:
        steps = min(chunk_size, horizon - done)
        outputs = model(images, steps).float()
        running = outputs.cumsum(0) if readout is None else readout + outputs.cumsum(0)
        layer_running = {}
        for name, neuron in layers.items():
            layer_running[name] = spikes_so_far[name] + neuron.spike_counts.double().cumsum(0)
            tally.neurons[name] = neuron.potential[0].numel()
        for t in tally.grid:
            local = min(t, horizon) - done - 1
            reached = done < t <= done + steps or (horizon < t and done + steps == horizon)
            if reached:
                tally.score(t, running[local], labels)
                for name in layers:
                    tally.spikes[t][name] += layer_running[name][local].item()
        readout = running[-1]
        spikes_so_far = {name: counts[-1].item() for name, counts in layer_running.items()}
        done += steps
    tally.samples += len(labels)


def choose_chunk_size(model: SpikingModel, images: torch.Tensor, horizon: int, memory_budget_mb: int) -> int:
    """Steps per chunk so that the live activations of one chunk fit the memory budget.

    One step is run with hooks that find the largest activation; a chunk keeps a few of those
    alive at once (input, output, a residual and the membrane potentials), hence the factor 4.
    """
    largest = 0

    def measure(module, inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(measure) for m in model.modules() if not list(m.children())]
    try:
        model.reset_state()
        model(images, 1)
    finally:
        for handle in handles:
            handle.remove()
        model.reset_state()
    per_step = max(4 * largest, 1)
    return int(max(1, min(horizon, memory_budget_mb * 2**20 // per_step)))
