"""Harness: one long simulation gives the same accuracy at every T as separate T-step runs."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from bench.architectures import build_architecture
from bench.errors import UserError
from bench.harness import LIVE_ACTIVATIONS, ChunkMemory, _run_chunk, choose_chunk_size, chunk_memory, evaluate
from bench.spiking import AnalogModel, DirectEncoder, IFNeuron, PoissonEncoder, SpikingNetwork, replace_relus

CPU = torch.device("cpu")


def two_layer_snn() -> SpikingNetwork:
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 7),
    )
    replace_relus(body, lambda name: IFNeuron(threshold=0.3))
    return SpikingNetwork(body, DirectEncoder()).eval()


def batches(model, count=3, batch=8, label_step=5):
    """Random images labelled with the model's own prediction at T=label_step."""
    torch.manual_seed(1)
    data = []
    for _ in range(count):
        images = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            model.reset_state()
            labels = model(images, label_step).sum(0).argmax(1)
        data.append((images, labels))
    model.reset_state()
    return data


def test_one_long_simulation_matches_separate_simulations():
    model = two_layer_snn()
    loader = batches(model)
    grid = [1, 2, 3, 5, 8, 13]
    long_run = evaluate(model, loader, grid, CPU, chunk_size=3)
    assert long_run.top1[5] == 1.0  # the labels were the predictions at T=5
    assert min(long_run.top1.values()) < 1.0  # ... and other T disagree, so the test can fail
    for t in grid:
        separate = evaluate(model, loader, [t], CPU, chunk_size=t)
        assert separate.top1[t] == long_run.top1[t], t
        assert separate.spikes_per_neuron[t] == long_run.spikes_per_neuron[t]


def test_spike_counts_equal_the_sum_of_neuron_outputs():
    model = two_layer_snn()
    loader = batches(model, count=1)
    images = loader[0][0]
    neurons = model.spiking_layers()
    outputs = {}
    hooks = [
        n.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
        for name, n in neurons.items()
    ]
    with torch.no_grad():
        model.reset_state()
        model(images, 6)
    for hook in hooks:
        hook.remove()
    evaluation = evaluate(model, loader, [6], CPU, chunk_size=4)
    for name, spikes in outputs.items():
        neurons_per_sample = spikes[0].numel()
        assert evaluation.neurons_per_sample[name] == neurons_per_sample
        expected_rate = spikes.sum().item() / (neurons_per_sample * len(images) * 6)
        assert abs(evaluation.firing_rates[6][name] - expected_rate) < 1e-9


def test_top5_appears_with_100_classes_and_ann_is_flat_in_time():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 100))
    images = torch.randn(10, 3, 2, 2)
    labels = network(images).topk(3, dim=1).indices[:, 2]  # third choice: wrong top-1, right top-5
    evaluation = evaluate(AnalogModel(network), [(images, labels)], [1, 10, 1000], CPU)
    assert evaluation.top1 == {1: 0.0, 10: 0.0, 1000: 0.0}
    assert evaluation.top5 == {1: 1.0, 10: 1.0, 1000: 1.0}


def test_chunk_size_follows_the_memory_budget():
    model = two_layer_snn()
    images = torch.randn(8, 3, 8, 8)
    # Largest activation: 8 images x 6 channels x 8 x 8 floats = 12 KiB, LIVE_ACTIVATIONS of them per
    # step; the state, held once: the potentials of both neuron layers, 12 KiB and 8 x 6 x 4 x 4 floats.
    largest, state = 8 * 6 * 64 * 4, 8 * 6 * 64 * 4 + 8 * 6 * 16 * 4
    assert chunk_memory(model, images) == ChunkMemory(fixed=state, per_step=LIVE_ACTIVATIONS * largest)
    assert choose_chunk_size(model, images, horizon=1000, memory_budget_mb=1) == (2**20 - state) // (
        LIVE_ACTIVATIONS * largest
    )
    assert choose_chunk_size(model, images, horizon=10, memory_budget_mb=1024) == 10


def profiled_peak_bytes(run) -> int:
    """The CPU allocator's peak of live bytes during `run()`, from torch.profiler's memory events."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        run()
    live = peak = 0
    for event in sorted(profile.events(), key=lambda event: event.time_range.start):
        # An operator's own allocations, and the frees that happen outside any operator.
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("architecture", ["cifar_resnet8", "cifar_resnet20"])
def test_the_chunk_memory_model_covers_the_measured_peak_with_the_state_counted(architecture):
    """The model (the neurons' state plus LIVE_ACTIVATIONS x the largest activation per step) is above
    the peak the profiler measures for chunks of 1 to 8 steps, and less than twice it; measured
    peaks (the CUDA way, here with the profiler) extrapolate from chunks of 2 and 4 steps to 8."""
    torch.manual_seed(0)
    ann = build_architecture(architecture, 10, image_size=32, in_channels=3).eval()
    replace_relus(ann, lambda name: IFNeuron(threshold=0.5))
    model = SpikingNetwork(ann, DirectEncoder()).eval()
    images = torch.rand(16, 3, 32, 32)
    modelled = chunk_memory(model, images)
    largest, state = modelled.per_step // LIVE_ACTIVATIONS, modelled.fixed
    assert state > 4 * largest, "the potentials of every layer outweigh one activation: they must count"
    for steps in (1, 2, 8):
        measured = profiled_peak_bytes(functools.partial(_run_chunk, model, images, steps))
        assert measured <= modelled.peak(steps) < 2 * measured, (steps, measured, modelled.peak(steps))
    from_peaks = chunk_memory(model, images, peak_bytes=profiled_peak_bytes)
    measured = profiled_peak_bytes(functools.partial(_run_chunk, model, images, 8))
    assert abs(from_peaks.peak(8) - measured) <= 0.1 * measured


class Interrupted(Exception):
    pass


class StopsAfter:
    """A loader that raises after `count` batches, as a run stopped in the middle of its curve."""

    def __init__(self, loader, count: int) -> None:
        self.loader, self.count = loader, count

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index == self.count:
                raise Interrupted
            yield batch


def poisson_snn() -> SpikingNetwork:
    """`two_layer_snn` fed Poisson spikes: every step draws random numbers, which a resumed curve
    must draw as the uninterrupted one did."""
    model = two_layer_snn()
    return SpikingNetwork(model.body, PoissonEncoder(seed=3)).eval()


def counted_calls(model) -> list[int]:
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    return calls


def assert_same_curve(first, second) -> None:
    assert first.num_samples == second.num_samples
    for name in ("top1", "spikes_per_neuron", "sops", "macs", "firing_rates"):
        assert getattr(first, name) == getattr(second, name), name
    assert all(np.array_equal(first.correct[t], second.correct[t]) for t in first.time_steps)


def test_a_stopped_curve_resumes_after_its_saved_batches_to_the_uninterrupted_result(tmp_path):
    grid = [1, 2, 5, 8]
    loader = batches(two_layer_snn(), count=4)
    whole = evaluate(poisson_snn(), loader, grid, CPU, chunk_size=3)
    partial = tmp_path / "curves" / "poisson.pt"
    with pytest.raises(Interrupted):
        evaluate(poisson_snn(), StopsAfter(loader, 2), grid, CPU, chunk_size=3, partial_curve=partial, save_every_s=0)
    assert partial.is_file()
    model = poisson_snn()  # a new process: a fresh network, its encoder's generator at its seed
    calls = counted_calls(model)
    resumed = evaluate(model, loader, grid, CPU, chunk_size=3, partial_curve=partial, save_every_s=0)
    assert len(calls) == 2 * 3  # two batches of 8 images left, in chunks of 3 steps up to T = 8
    assert_same_curve(whole, resumed)
    assert resumed.chunk_size == 3 and not partial.exists()


def test_a_partial_curve_counts_only_for_its_own_network(tmp_path):
    grid = [1, 4]
    loader = batches(two_layer_snn(), count=3)
    partial = tmp_path / "curve.pt"
    with pytest.raises(Interrupted):
        evaluate(two_layer_snn(), StopsAfter(loader, 1), grid, CPU, partial_curve=partial, save_every_s=0)
    other = two_layer_snn()
    with torch.no_grad():
        other.body[0].bias += 0.5
    calls = counted_calls(other)
    resumed = evaluate(other, loader, grid, CPU, partial_curve=partial, save_every_s=0)
    assert len(calls) == 2 + 3  # probes for the classes and the chunk size, then every batch in one chunk
    assert_same_curve(evaluate(other, loader, grid, CPU), resumed)


def test_a_damaged_partial_curve_is_a_user_error_that_says_to_delete_it(tmp_path):
    partial = tmp_path / "curve.pt"
    partial.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="partial curve .* cannot be read safely .* delete it"):
        evaluate(two_layer_snn(), batches(two_layer_snn(), count=1), [1, 2], CPU, partial_curve=partial)
