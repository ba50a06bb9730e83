"""The harness: simulate a spiking model once up to T_max and read every T of the grid.

For each test batch `[B, C, H, W]` the model is reset, then run in time chunks of `chunk_size`
steps (outputs `[chunk, B, K]`); the running sum of outputs is the readout, so the prediction at
T is the argmax of the sum of the first T outputs, the same as a separate T-step simulation.
It keeps, at each T, which test images were classified correctly (a bit per image, in test-set
order), so that two methods read on the same images can be compared paired (`bench.stats`).
On the way it counts, per step, the spikes of every neuron layer and the synaptic operations of
every synaptic layer (`bench.efficiency`), and reads their running totals at each T. A
time-invariant model (an ANN) is run for one step and holds its numbers at every T. A long
simulation saves its sums after finished batches (`PartialCurve`), so a stopped run resumes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench import distributed
from bench.checkpoints import random_states, read_safely, restore_random_states, write_atomically
from bench.config import CPU_BUDGET_MB
from bench.distributed import gather_sum
from bench.efficiency import PROFILER_EVENT, OperationCounter, SpikeRecorder
from bench.progress import QUIET
from bench.spiking import SpikingModel
from bench.spiking.neurons import Stateful


class BrokenContract(RuntimeError):
    """A model did not keep the contract of `bench.spiking` (for example, it ran steps it did not
    count): its setting is recorded as failed, with this message."""


@dataclass
class Evaluation:
    """Numbers at each T of the grid. Rates are spikes per neuron per step; operation counts
    are per sample, summed over the first T steps."""

    time_steps: list[int]
    num_samples: int = 0
    top1: dict[int, float] = field(default_factory=dict)
    top5: dict[int, float] | None = None
    # Per T, whether each test image (in test-set order) was classified correctly (top-1).
    correct: dict[int, np.ndarray] = field(default_factory=dict)
    firing_rates: dict[int, dict[str, float]] = field(default_factory=dict)
    spikes_per_neuron: dict[int, float] = field(default_factory=dict)
    sops: dict[int, float] = field(default_factory=dict)
    macs: dict[int, float] = field(default_factory=dict)
    neurons_per_sample: dict[str, int] = field(default_factory=dict)
    dense_macs_per_sample: int = 0
    chunk_size: int = 0
    wall_s: float = 0.0


class _Tally:
    """Running sums over batches, read at each T of the grid: correct predictions and counters.

    A counter is any named per-step quantity (`spikes/<layer>`, `sop/<layer>`, `mac/<layer>`),
    summed over the batch; its running total is taken at every T the chunk reaches.
    """

    def __init__(self, grid: list[int], with_top5: bool) -> None:
        self.grid = grid
        self.correct1 = dict.fromkeys(grid, 0)
        # Per-image top-1 hits at each T and the images' positions in the whole test set: under
        # torchrun a process evaluates every world-th image starting at its rank.
        self.hits: dict[int, list[torch.Tensor]] = {t: [] for t in grid}
        self.positions: list[torch.Tensor] = []
        self.first, self.stride = distributed.rank(), distributed.world_size()
        self.correct5 = dict.fromkeys(grid, 0) if with_top5 else None
        self.totals: dict[int, dict[str, float]] = {t: defaultdict(float) for t in grid}
        self.neurons: dict[str, int] = {}
        self.dense_macs: dict[str, int] = {}
        self.samples = 0

    def score(self, time_step: int, scores: torch.Tensor, labels: torch.Tensor) -> None:
        hits = scores.argmax(1) == labels
        self.hits[time_step].append(hits.cpu())
        self.correct1[time_step] += hits.sum().item()
        if self.correct5 is not None:
            top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
            self.correct5[time_step] += (top5 == labels[:, None]).any(1).sum().item()

    def add(self, other: _Tally) -> None:
        """Fold in the sums of another process's shard (evaluation under torchrun)."""
        for t in self.grid:
            self.correct1[t] += other.correct1[t]
            if self.correct5 is not None:
                self.correct5[t] += other.correct5[t]
            for name, value in other.totals[t].items():
                self.totals[t][name] += value
            self.hits[t] += other.hits[t]
        self.positions += other.positions
        self.samples += other.samples
        self.neurons = self.neurons or other.neurons
        self.dense_macs = self.dense_macs or other.dense_macs

    def state_dict(self) -> dict:
        """The sums so far, as tensors and plain data (a partial curve's file holds them)."""
        return {
            "correct1": dict(self.correct1),
            "correct5": None if self.correct5 is None else dict(self.correct5),
            "hits": {t: _joined(self.hits[t], torch.bool) for t in self.grid},
            "positions": _joined(self.positions, torch.int64),
            "totals": {t: dict(self.totals[t]) for t in self.grid},
            "neurons": dict(self.neurons),
            "dense_macs": dict(self.dense_macs),
            "samples": self.samples,
        }

    def load_state_dict(self, state: dict) -> None:
        self.correct1, self.correct5 = dict(state["correct1"]), state["correct5"]
        self.hits = {t: [state["hits"][t]] for t in self.grid}
        self.positions = [state["positions"]]
        self.totals = {t: defaultdict(float, state["totals"][t]) for t in self.grid}
        self.neurons, self.dense_macs, self.samples = state["neurons"], state["dense_macs"], state["samples"]

    def result(self, evaluation: Evaluation) -> Evaluation:
        samples = max(self.samples, 1)
        evaluation.num_samples = self.samples
        evaluation.top1 = {t: self.correct1[t] / samples for t in self.grid}
        if self.correct5 is not None:
            evaluation.top5 = {t: self.correct5[t] / samples for t in self.grid}
        if self.positions:
            order = torch.cat(self.positions).argsort()
            evaluation.correct = {t: torch.cat(self.hits[t])[order].numpy() for t in self.grid}
        evaluation.neurons_per_sample = dict(self.neurons)
        evaluation.dense_macs_per_sample = sum(self.dense_macs.values())
        total_neurons = sum(self.neurons.values())
        for t in self.grid:
            totals = self.totals[t]
            evaluation.firing_rates[t] = {
                name: totals[f"spikes/{name}"] / (count * samples * t) for name, count in self.neurons.items()
            }
            spikes = sum(totals[f"spikes/{name}"] for name in self.neurons)
            evaluation.spikes_per_neuron[t] = spikes / (total_neurons * samples) if total_neurons else 0.0
            evaluation.sops[t] = sum(v for k, v in totals.items() if k.startswith("sop/")) / samples
            evaluation.macs[t] = sum(v for k, v in totals.items() if k.startswith("mac/")) / samples
        return evaluation


@torch.no_grad()
def evaluate(
    model: SpikingModel,
    loader,
    time_steps: list[int],
    device: torch.device,
    *,
    chunk_size: int | None = None,
    memory_budget_mb: int | None = None,
    num_classes: int | None = None,
    count_operations: bool = True,
    reporter=QUIET,
    description: str = "simulate",
    partial_curve: Path | None = None,
    save_every_s: float = 60.0,
) -> Evaluation:
    """Accuracy and counters at every T in `time_steps` from one simulation of max(time_steps) steps.

    With `partial_curve`, the sums so far are saved there at most every `save_every_s` seconds,
    after a finished batch, and a later call on the same network resumes after the saved batches
    (`PartialCurve`); the file is deleted when the curve is complete.
    """
    grid = sorted(set(time_steps))
    model = model.to(device).eval()
    horizon = 1 if model.time_invariant else grid[-1]
    partial = PartialCurve(partial_curve, model, grid, len(loader), count_operations) if partial_curve else None
    resumed = partial.load() if partial is not None else None
    spikes = SpikeRecorder(model)
    counter = OperationCounter(model, all_dense=model.time_invariant, spikes=spikes) if count_operations else None
    tally: _Tally | None = None
    evaluation = Evaluation(time_steps=grid)
    started, simulated_before, done = time.perf_counter(), 0.0, 0
    try:
        with reporter.task(description, total=len(loader)) as task:
            batches = iter(loader)
            if resumed is not None:
                tally, simulated_before, done = partial.resume(resumed, evaluation, batches, loader, model)
                task.advance(done)
            for images, labels in batches:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                if tally is None:
                    model.reset_state()
                    classes = num_classes or model(images[:1], 1).shape[-1]
                    tally = _Tally(grid, with_top5=classes >= 100)
                    evaluation.chunk_size = chunk_size or choose_chunk_size(model, images, horizon, memory_budget_mb)
                _simulate_batch(model, spikes, counter, images, labels, horizon, evaluation.chunk_size, tally)
                done += 1
                task.advance(acc=tally.correct1[grid[-1]] / tally.samples)
                if partial is not None and done < len(loader) and partial.due(save_every_s):
                    simulated = simulated_before + time.perf_counter() - started
                    partial.save(tally, done, evaluation.chunk_size, simulated, loader, model)
    finally:
        spikes.close()
        if counter is not None:
            counter.close()
        model.reset_state()
    evaluation.wall_s = simulated_before + time.perf_counter() - started
    tally = gather_sum(tally)  # under torchrun each process saw its own shard of the loader
    if partial is not None:
        partial.remove()
    return tally.result(evaluation) if tally else evaluation


class PartialCurve:
    """A long simulation's sums after its finished batches, kept in a file so that a stopped run
    resumes at the next batch instead of at the start.

    The file holds the tally, the chunk size, the simulation time so far and the random states
    after the last saved batch (a resumed curve is the one an uninterrupted run gives). It counts
    only for the same network (a digest of its weights and buffers), grid, number of batches,
    counters and process of a torchrun group; any other file at the path is replaced.
    """

    def __init__(self, path: Path, model: SpikingModel, grid: list[int], batches: int, counting: bool) -> None:
        rank, world, path = distributed.rank(), distributed.world_size(), Path(path)
        self.path = path if world == 1 else path.with_name(f"{path.stem}-rank{rank}of{world}.pt")
        self.key = {
            "weights": weights_digest(model),
            "grid": list(grid),
            "batches": batches,
            "counting": counting,
            "process": [rank, world],
        }
        self.saved_at = time.perf_counter()

    def load(self) -> dict | None:
        """The saved state, or None when there is none for this network and grid."""
        if not self.path.is_file():
            return None
        state = read_safely(self.path, what="partial curve", instead="simulate the curve from its start")
        return state if isinstance(state, dict) and state.get("key") == self.key else None

    def resume(self, state: dict, evaluation: Evaluation, batches, loader, model):
        """(tally, simulation seconds so far, batches done) from a loaded state; `batches` (the
        loader's iterator) is moved past the finished batches and the random states restored."""
        tally = _Tally(self.key["grid"], with_top5=state["tally"]["correct5"] is not None)
        tally.load_state_dict(state["tally"])
        evaluation.chunk_size = state["chunk_size"]
        for _ in itertools.islice(batches, state["batches"]):
            pass  # the finished batches are read again, not simulated
        restore_random_states(state["random"], loader, model)
        return tally, state["wall_s"], state["batches"]

    def due(self, every_s: float) -> bool:
        return time.perf_counter() - self.saved_at >= every_s

    def save(self, tally: _Tally, batches: int, chunk_size: int, wall_s: float, loader, model) -> None:
        state = {
            "key": self.key,
            "tally": tally.state_dict(),
            "batches": batches,
            "chunk_size": chunk_size,
            "wall_s": wall_s,
            "random": random_states(loader, model),
        }
        then = "run the same command again: the curve resumes after its last saved batch"
        write_atomically(self.path, state, what="partial curve", then=then)
        self.saved_at = time.perf_counter()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of `model`, by name, bytes and dtype."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def _joined(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def _step_counts(spikes: SpikeRecorder, counter: OperationCounter | None) -> dict[str, torch.Tensor]:
    """Per-step totals of the last chunk: spikes of each neuron layer, operations of each synaptic layer."""
    counts = {f"spikes/{name}": per_step for name, per_step in spikes.spike_counts().items()}
    if counter is not None:
        counts.update({f"{count.kind}/{name}": count.per_step for name, count in counter.counts.items()})
    return counts


def _simulate_batch(
    model, spikes: SpikeRecorder, counter, images, labels, horizon: int, chunk_size: int, tally: _Tally
) -> None:
    model.reset_state()
    readout = None
    so_far: dict[str, float] = {}  # each counter's running total before this chunk
    done = 0
    while done < horizon:
        steps = min(chunk_size, horizon - done)
        if counter is not None:
            counter.start_call(steps, len(images))
        outputs = model(images, steps).float()
        _check_steps(outputs, spikes, steps)
        running = outputs.cumsum(0) if readout is None else readout + outputs.cumsum(0)
        names, rows = _running_counts(spikes, counter, so_far)
        for t in tally.grid:
            # An ANN runs one step and holds it: every T beyond the horizon reads its last step.
            reached = done < t <= done + steps or (t > horizon and done + steps == horizon)
            if reached:
                local = min(t, horizon) - done - 1
                tally.score(t, running[local], labels)
                for name, row in zip(names, rows):
                    tally.totals[t][name] += row[local]
        readout = running[-1]
        so_far = {name: row[-1] for name, row in zip(names, rows)}
        done += steps
    tally.positions.append(tally.first + tally.stride * torch.arange(tally.samples, tally.samples + len(labels)))
    tally.neurons.update(spikes.neurons_per_sample())
    if counter is not None:
        tally.dense_macs = dict(counter.dense_macs_per_sample)
    tally.samples += len(labels)


def _running_counts(spikes: SpikeRecorder, counter, so_far: dict[str, float]) -> tuple[list[str], list[list[float]]]:
    """Every counter's name and running totals at each step of the last chunk, from `so_far` on."""
    with torch.profiler.record_function(PROFILER_EVENT):
        counts = _step_counts(spikes, counter)
        names = list(counts)
        if not names:
            return names, []
        # Every counter of the chunk in one float64 table [counters, steps] (exact for these integer
        # counts), read back to Python once per chunk instead of once per counter and T.
        table = torch.stack([counts[name].to(torch.float64) for name in names]).cpu().cumsum(1)
        table += torch.tensor([so_far.get(name, 0.0) for name in names], dtype=torch.float64)[:, None]
        return names, table.tolist()


def _check_steps(outputs: torch.Tensor, spikes: SpikeRecorder, steps: int) -> None:
    """Every step a model simulates is counted in T: no hidden warm-up steps, no missing outputs."""
    if outputs.shape[0] != steps:
        raise BrokenContract(f"the model returned {outputs.shape[0]} outputs when asked for {steps} time steps")
    for name, spike_map in spikes.spike_maps.items():
        if spike_map.shape[0] != steps:
            raise BrokenContract(
                f"neuron layer {name} ran {spike_map.shape[0]} time steps in a call of {steps}: "
                f"every step a model simulates must count in T"
            )


# Largest activation of one chunk on a CPU: past a few MiB per tensor, the chunk's tensors stop
# fitting the caches and the allocator hands them out as fresh pages, so longer chunks get slower.
CPU_CHUNK_BYTES = 8 * 2**20
# Activations of the largest size alive at once per simulated step, where the peak is not measured:
# 4.0-5.2 measured on CPU for cifar_resnet8 and cifar_resnet20 (tests/test_harness.py checks the
# model against the profiler's peaks), 6.3-6.6 in a ResNet-50 chunk on an H100.
LIVE_ACTIVATIONS = 7
# The share of the device's free memory a simulation may take when no budget is given.
FREE_MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class ChunkMemory:
    """The peak bytes of simulating a chunk of c steps: `fixed + c * per_step`. `fixed` holds what
    every chunk keeps whatever its length (the neurons' potentials, carried from chunk to chunk)."""

    fixed: int
    per_step: int

    def peak(self, steps: int) -> int:
        return self.fixed + steps * self.per_step

    def steps_within(self, budget: int) -> int:
        return max(1, (budget - self.fixed) // max(self.per_step, 1))


def chunk_memory(model: SpikingModel, images: torch.Tensor, peak_bytes=None) -> ChunkMemory:
    """The memory model of `model` on this batch. With `peak_bytes(run)` (the allocator's peak on
    CUDA, the default there) both terms are measured on chunks of 2 and 4 steps; otherwise `fixed`
    is the neurons' state after one step and `per_step` LIVE_ACTIVATIONS times its largest activation.
    The random states are put back afterwards: measuring draws no number the simulation would."""
    if peak_bytes is None and images.device.type == "cuda":
        peak_bytes = cuda_peak_bytes
    states = random_states(None, model)
    try:
        if peak_bytes is not None:
            two, four = (peak_bytes(functools.partial(_run_chunk, model, images, steps)) for steps in (2, 4))
            per_step = max((four - two) // 2, 1)
            return ChunkMemory(max(two - 2 * per_step, 0), per_step)
        largest, state = _one_step_sizes(model, images)
        return ChunkMemory(state, max(LIVE_ACTIVATIONS * largest, 1))
    finally:
        restore_random_states(states, None, model)


def cuda_peak_bytes(run) -> int:
    """Bytes the CUDA caching allocator held at most during `run()`, above what it held before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def default_budget_bytes(device: torch.device) -> int:
    """FREE_MEMORY_SHARE of what the GPU has free (the driver's free memory and the allocator's
    unused cache); CPU_BUDGET_MB elsewhere."""
    if device.type != "cuda":
        return CPU_BUDGET_MB * 2**20
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(FREE_MEMORY_SHARE * (free + cached))


def _run_chunk(model: SpikingModel, images: torch.Tensor, steps: int) -> None:
    model.reset_state()
    with torch.no_grad():
        model(images, steps)
    model.reset_state()


def _one_step_sizes(model: SpikingModel, images: torch.Tensor) -> tuple[int, int]:
    """(bytes of the largest activation of one step, bytes of the neurons' state after it)."""
    largest = 0

    def measure(module, inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(measure) for m in model.modules() if not list(m.children())]
    try:
        model.reset_state()
        with torch.no_grad():
            model(images, 1)
        state = sum(
            tensor.numel() * tensor.element_size()
            for module in model.modules()
            if isinstance(module, Stateful)
            for tensor in module.state_snapshot().values()
            if isinstance(tensor, torch.Tensor)
        )
    finally:
        for handle in handles:
            handle.remove()
        model.reset_state()
    return largest, state


def choose_chunk_size(
    model: SpikingModel, images: torch.Tensor, horizon: int, memory_budget_mb: int | None = None
) -> int:
    """Steps per chunk so that one chunk's peak (`chunk_memory`) fits the budget: `memory_budget_mb`,
    or by default a share of the device's free memory (`default_budget_bytes`)."""
    budget = memory_budget_mb * 2**20 if memory_budget_mb else default_budget_bytes(images.device)
    memory = chunk_memory(model, images)
    chunk = memory.steps_within(budget)
    if images.device.type == "cpu":
        # Longer chunks pay less Python per step until their tensors outgrow the caches (CPU_CHUNK_BYTES).
        chunk = min(chunk, CPU_CHUNK_BYTES * LIVE_ACTIVATIONS // memory.per_step)
    return int(max(1, min(horizon, chunk)))
