"""The neuron contract of `bench.spiking`: a new neuron is a small subclass, and the harness counts
its spikes and the operations they cause without knowing anything else about it."""

import pytest
import torch
from torch import nn

from bench.efficiency import SpikeRecorder
from bench.harness import evaluate
from bench.spiking import DirectEncoder, LIFNeuron, SpikingNetwork, SpikingNeuron, TimeLayout, time_layout


class HalfStartIF(SpikingNeuron):
    """An IF neuron that starts at half its threshold (the QCFS initialization), in a few lines."""

    def fresh_potential(self, like, threshold):
        return torch.zeros_like(like) + 0.5 * threshold

    def step(self, current, potential, threshold):
        potential = potential + current
        spikes = (potential >= threshold).to(current.dtype)
        return spikes, potential - spikes * threshold


class LearnableLeakLIF(LIFNeuron):
    """A LIF neuron whose leak is learned (PLIF-like): leak = sigmoid(w)."""

    def __init__(self) -> None:
        super().__init__(threshold=1.0)
        self.leak_weight = nn.Parameter(torch.tensor(0.0))

    def step(self, current, potential, threshold):
        return self.fire(torch.sigmoid(self.leak_weight) * potential + current, threshold)


def two_layer_network() -> SpikingNetwork:
    """identity (2 -> 2) -> HalfStartIF -> sum (2 -> 1), without biases."""
    first, second = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.eye(2))
        second.weight.fill_(1.0)
    return SpikingNetwork(nn.Sequential(first, HalfStartIF(threshold=1.0), second), DirectEncoder())


def test_new_neuron_runs_through_the_harness_with_hand_counted_spikes_and_operations():
    # Currents 0.3 and 0.8 every step, both neurons start at 0.5:
    #   0.3: 0.8, 1.1 -> spike (0.1), 0.4, 0.7             spikes 0 1 0 0
    #   0.8: 1.3 -> spike (0.3), 1.1 -> spike (0.1), 0.9, 1.7 -> spike   spikes 1 1 0 1
    model = two_layer_network()
    loader = [(torch.tensor([[0.3, 0.8]]), torch.tensor([0]))]
    evaluation = evaluate(model, loader, [1, 2, 4], torch.device("cpu"), chunk_size=3)  # state carried across chunks
    spikes_so_far = {1: 1, 2: 3, 4: 4}
    for t, spikes in spikes_so_far.items():
        assert evaluation.spikes_per_neuron[t] == spikes / 2
        assert evaluation.firing_rates[t] == {"body.1": spikes / (2 * t)}
        assert evaluation.sops[t] == spikes * 1  # each spike reaches the one output
        assert evaluation.macs[t] == 4 * t  # the analog input through the 2 x 2 layer, every step
    assert evaluation.neurons_per_sample == {"body.1": 2}


def test_network_resets_the_new_neuron_and_hooks_are_removable():
    model = two_layer_network()
    neuron = model.body[1]
    images = torch.tensor([[0.3, 0.8]])
    with torch.no_grad():
        first = model(images, 4)
        assert neuron.potential is not None
        model.reset_state()
        assert neuron.potential is None
        recorder = SpikeRecorder(model)
        assert torch.equal(model(images, 4), first)  # a fresh state gives the same run
        recorder.close()
        assert recorder.spike_maps["body.1"].tolist() == [[0, 1], [1, 1], [0, 0], [0, 1]]
        model.reset_state()
        model(images, 2)
    assert recorder.spike_maps["body.1"].shape[0] == 4  # the closed recorder saw nothing more


def test_time_comes_from_the_call_not_from_the_neuron():
    neuron = HalfStartIF(threshold=1.0)
    current = torch.full((6, 1), 0.8)  # [T*B] for T=3, B=2
    with time_layout(TimeLayout(time_steps=3)):
        three_steps = neuron(current)
    neuron.reset_state()
    one_step = neuron(current)  # outside a call: one step of a batch of 6
    assert three_steps.view(3, 2).tolist() == [[1, 1], [1, 1], [0, 0]]
    assert one_step.view(-1).tolist() == [1] * 6


def test_learnable_leak_subclass_gets_its_gradient():
    neuron = LearnableLeakLIF()
    current = torch.tensor([[0.6], [0.6]]).unsqueeze(1)  # [T=2, B=1, 1]
    spikes = neuron.run_sequence(current)
    # v1 = 0.6 (no spike), v2 = sigmoid(0) * 0.6 + 0.6 = 0.9 (no spike)
    assert spikes.view(-1).tolist() == [0, 0]
    assert neuron.potential.item() == pytest.approx(0.9)
    neuron.potential.sum().backward()
    # d v2 / d w = v1 * sigmoid'(0) = 0.6 * 0.25, times the reset's d(v - s)/dv = 1 - g(v2 - 1) = 1 - 0.9
    # (the triangular surrogate of width 1 at -0.1)
    assert neuron.leak_weight.grad.item() == pytest.approx(0.6 * 0.25 * 0.1)
