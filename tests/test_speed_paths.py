"""The fast paths compute what the plain ones do: the fused neuron loop, the time-constant first
layers, and activation checkpointing give the same outputs and gradients as the reference code."""

import copy
import itertools
import shutil

import pytest
import torch
from torch import nn

from bench.architectures import build_architecture
from bench.efficiency import SpikeRecorder
from bench.harness import evaluate
from bench.spiking import (
    DirectEncoder,
    LIFNeuron,
    PoissonEncoder,
    SpikingNetwork,
    Surrogate,
    TimeLayout,
    list_surrogates,
    replace_relus,
    time_layout,
)

STEPS, BATCH, CHANNELS = 5, 3, 4


def neuron_pair(**options) -> tuple[LIFNeuron, LIFNeuron]:
    return LIFNeuron(fused=True, **options), LIFNeuron(fused=False, **options)


def run(neuron: LIFNeuron, currents: torch.Tensor, upstream: torch.Tensor, compiled: bool = False):
    """Outputs, d(loss)/d(currents) and d(loss)/d(initial potential) for loss = <outputs, upstream>."""
    currents = currents.clone().requires_grad_(True)
    outputs = neuron.run_sequence(currents, compiled=compiled).flatten(0, 1)
    loss = (outputs * upstream.flatten(0, 1)).sum() + neuron.potential.square().sum()
    loss.backward()
    return outputs.detach(), currents.grad


def assert_same(fused: torch.Tensor, plain: torch.Tensor) -> None:
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", list_surrogates())
@pytest.mark.parametrize(
    "reset,leak,detach_reset", list(itertools.product(["subtract", "zero"], [1.0, 0.8], [False, True]))
)
def test_fused_loop_matches_plain_loop(shape, reset, leak, detach_reset):
    torch.manual_seed(0)
    fused, plain = neuron_pair(
        leak=leak,
        reset_mode=reset,
        detach_reset=detach_reset,
        surrogate=Surrogate(shape, width=1.5, height=0.7),
        threshold=torch.tensor([0.6, 0.9, 1.0, 1.3]),
        initial_potential=0.3,
    )
    currents = torch.randn(STEPS, BATCH, CHANNELS, 2, 2) * 0.8 + 0.3
    upstream = torch.randn(STEPS, BATCH, CHANNELS, 2, 2)
    fused_out, fused_grad = run(fused, currents, upstream)
    plain_out, plain_grad = run(plain, currents, upstream)
    assert fused_out.sum() > 0 and (fused_out == 0).any()  # a trace that both fires and stays silent
    assert_same(fused_out, plain_out)
    assert_same(fused_grad, plain_grad)
    assert_same(fused.potential.detach(), plain.potential.detach())


@pytest.mark.parametrize("spike_amplitude", ["one", "threshold"])
def test_fused_state_carried_with_gradients_across_calls(spike_amplitude):
    """Two calls of 2 and 3 steps with autograd on: the second gets gradient into the first's state."""
    torch.manual_seed(1)
    currents = torch.randn(STEPS, BATCH, CHANNELS) + 0.4
    upstream = torch.randn(STEPS, BATCH, CHANNELS)
    results = []
    for use_fused in (True, False):
        neuron = LIFNeuron(leak=0.9, threshold=0.8, spike_amplitude=spike_amplitude, fused=use_fused)
        inputs = currents.clone().requires_grad_(True)
        outputs = []
        for chunk in (inputs[:2], inputs[2:]):
            with time_layout(TimeLayout(time_steps=len(chunk))):
                outputs.append(neuron(chunk.flatten(0, 1)).unflatten(0, (len(chunk), -1)))
        (torch.cat(outputs) * upstream).sum().backward()
        results.append((torch.cat(outputs).detach(), inputs.grad))
    assert_same(results[0][0], results[1][0])
    assert_same(results[0][1], results[1][1])


def test_fused_without_grad_matches_and_records_spike_counts():
    torch.manual_seed(2)
    currents = torch.rand(STEPS, BATCH, CHANNELS) * 1.5
    fused, plain = neuron_pair(leak=0.7, reset_mode="zero", threshold=0.9)
    recorders = [SpikeRecorder(neuron) for neuron in (fused, plain)]
    with torch.no_grad():
        assert torch.equal(fused.run_sequence(currents), plain.run_sequence(currents))
    fused_counts, plain_counts = (recorder.spike_counts()[""] for recorder in recorders)
    assert torch.equal(fused_counts, plain_counts)
    assert torch.equal(fused.potential, plain.potential)


def test_constant_current_is_expanded_over_time():
    neuron = LIFNeuron(threshold=1.0)
    with time_layout(TimeLayout(time_steps=4, constant_rows=2)):
        out = neuron(torch.tensor([[0.6], [0.3]]))  # [B=2, 1] held for 4 steps
    assert out.view(4, 2).tolist() == [[0, 0], [1, 0], [0, 0], [1, 1]]


def spiking_copy(ann: nn.Module, encoder: nn.Module, **options) -> SpikingNetwork:
    body = copy.deepcopy(ann)
    replace_relus(body, lambda name: LIFNeuron(leak=0.9, threshold=0.5))
    return SpikingNetwork(body, encoder, **options)


def train_step(
    model: SpikingNetwork, images: torch.Tensor, time_steps: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.reset_state()
    outputs = model(images, time_steps)
    outputs.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return outputs.detach(), grads


def assert_same_training_step(first, second, images, state_tolerance: dict) -> None:
    """One training step of each: the same outputs, gradients and state (parameters, running statistics)."""
    first_out, first_grads = train_step(first, images, 3)
    second_out, second_grads = train_step(second, images, 3)
    assert_same(first_out, second_out)
    for name in second_grads:
        torch.testing.assert_close(first_grads[name], second_grads[name], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.state_dict(), second.state_dict(), **state_tolerance)


@pytest.mark.parametrize("architecture", ["cifar_resnet8", "cifar_vgg_tiny"])
def test_time_constant_prefix_matches_full_computation(architecture):
    """Stem on [B] once versus on [T*B]: same outputs, gradients and batch-norm running stats."""
    torch.manual_seed(3)
    ann = build_architecture(architecture, 10, width=0.5)
    fast = spiking_copy(ann, DirectEncoder())
    full = spiking_copy(ann, DirectEncoder(), constant_prefix=False)
    images = torch.randn(6, 3, 32, 32)
    assert_same_training_step(fast, full, images, state_tolerance={"rtol": 1e-5, "atol": 1e-6})
    assert fast.uses_constant_prefix and not full.uses_constant_prefix
    fast.eval(), full.eval()
    with torch.no_grad():
        fast.reset_state(), full.reset_state()
        assert_same(fast(images, 7), full(images, 7))


class _SkipAroundFirstNeuron(nn.Module):
    """A stem output that reaches a later layer without passing a neuron: no prefix possible."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, images):
        stem = self.conv(images)
        return self.head((self.act(stem) + stem).mean((2, 3)))


def test_prefix_is_refused_when_a_stem_tensor_bypasses_the_neurons():
    torch.manual_seed(4)
    network = spiking_copy(_SkipAroundFirstNeuron(), DirectEncoder())
    reference = spiking_copy(_SkipAroundFirstNeuron(), DirectEncoder(), constant_prefix=False)
    reference.load_state_dict(network.state_dict())
    images = torch.randn(1, 3, 5, 5)  # batch 1 would even broadcast silently
    with torch.no_grad():
        assert_same(network(images, 3), reference(images, 3))
    assert not network.uses_constant_prefix


def test_poisson_input_never_uses_the_prefix():
    network = spiking_copy(build_architecture("cifar_vgg_tiny", 10, width=0.25), PoissonEncoder())
    with torch.no_grad():
        network(torch.randn(2, 3, 32, 32), 2)
    assert not network.uses_constant_prefix


@pytest.mark.parametrize(
    "architecture", ["cifar_resnet8", "cifar_vgg_tiny"]
)  # residual blocks; a Sequential cut at neurons
def test_checkpointing_matches_stored_activations(architecture):
    torch.manual_seed(5)
    ann = build_architecture(architecture, 10, width=0.5)
    stored = spiking_copy(ann, DirectEncoder())
    recomputed = spiking_copy(ann, DirectEncoder(), checkpoint=True)
    images = torch.randn(4, 3, 32, 32)
    # The state dicts compare the batch-norm running statistics: recomputation must not count a batch twice.
    assert_same_training_step(recomputed, stored, images, state_tolerance={})
    assert sum("forward" in m.__dict__ for m in recomputed.modules()) >= 1


def test_half_precision_current_keeps_a_float32_potential():
    torch.manual_seed(6)
    currents = (torch.rand(STEPS, BATCH, CHANNELS) * 0.6).to(torch.bfloat16)
    half, full = LIFNeuron(leak=0.9, threshold=0.7), LIFNeuron(leak=0.9, threshold=0.7)
    low = currents.clone().requires_grad_(True)
    high = currents.float().requires_grad_(True)
    half_out, full_out = half.run_sequence(low), full.run_sequence(high)
    assert half_out.dtype == torch.bfloat16 and half.potential.dtype == torch.float32
    assert torch.equal(half_out.float(), full_out)
    half_out.float().sum().backward()
    full_out.sum().backward()
    assert low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(low.grad.float(), high.grad, rtol=1e-2, atol=1e-2)


def test_prefix_probe_is_invisible_to_forward_hooks():
    network = spiking_copy(build_architecture("cifar_resnet8", 10, width=0.25), DirectEncoder())
    calls = []
    network.body.conv1.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    with torch.no_grad():
        network(torch.randn(3, 3, 32, 32), 4)
    assert network.uses_constant_prefix and calls == [3]  # one call, on the images themselves


def test_harness_numbers_do_not_depend_on_the_prefix():
    torch.manual_seed(7)
    ann = build_architecture("cifar_resnet8", 10, width=0.5)
    images, labels = torch.randn(5, 3, 32, 32), torch.randint(0, 10, (5,))
    results = [
        evaluate(
            spiking_copy(ann, DirectEncoder(), constant_prefix=prefix),
            [(images, labels)],
            [1, 3, 8],
            torch.device("cpu"),
            chunk_size=3,
        )
        for prefix in (True, False)
    ]
    for field in ("top1", "sops", "macs", "spikes_per_neuron", "firing_rates"):
        assert getattr(results[0], field) == getattr(results[1], field), field


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile needs a C++ compiler on CPU"
)
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_compiled_kernels_match_the_plain_loop(reset, monkeypatch):
    import bench.spiking.fused as fused

    torch.manual_seed(8)
    threshold = torch.tensor([0.6, 0.9, 1.0, 1.3])
    fast, plain = neuron_pair(
        leak=0.8, reset_mode=reset, threshold=threshold, surrogate=Surrogate("fast_sigmoid", 0.8, 1.2)
    )
    currents = torch.randn(STEPS, BATCH, CHANNELS, 2, 2).contiguous(memory_format=torch.contiguous_format) * 0.8 + 0.3
    upstream = torch.randn(STEPS, BATCH, CHANNELS, 2, 2)
    fast_out, fast_grad = run(fast, currents, upstream, compiled=True)
    with torch.no_grad():
        fast.reset_state()
        fast_no_grad = fast.run_sequence(currents, compiled=True).flatten(0, 1)
    monkeypatch.setattr(fused, "COMPILED_FORWARD_MIN_ELEMENTS", 1)  # these small steps too, as large ones run
    with torch.no_grad():
        fast.reset_state()
        compiled_no_grad = fast.run_sequence(currents, compiled=True).flatten(0, 1)
    plain_out, plain_grad = run(plain, currents, upstream)
    assert_same(fast_out, plain_out)
    assert_same(fast_no_grad, plain_out)
    assert_same(compiled_no_grad, plain_out)
    assert_same(fast_grad, plain_grad)


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile needs a C++ compiler on CPU"
)
def test_one_compiled_backward_serves_every_surrogate_width():
    # The faithful hybrid scales each layer's surrogate width by its threshold: more widths than
    # torch._dynamo's recompile limit (8), after which layers would fall back to the eager step.
    from torch._dynamo.utils import counters

    torch.manual_seed(9)
    currents = torch.randn(STEPS, BATCH, CHANNELS, 2, 2) * 0.8 + 0.3
    upstream = torch.randn(STEPS, BATCH, CHANNELS, 2, 2)
    graphs = []
    for width in (0.5 + 0.25 * i for i in range(10)):
        fast, plain = neuron_pair(leak=0.8, threshold=torch.tensor(1.1), surrogate=Surrogate("triangular", width, 0.9))
        assert_same(run(fast, currents, upstream, compiled=True)[1], run(plain, currents, upstream)[1])
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[-1] == graphs[0], f"compiled graphs after each width: {graphs}"
