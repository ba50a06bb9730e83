"""Hot loops read from the device rarely: on a GPU every read (`.item()`, `bool(tensor)`, a copy to
the host) waits for the queue to drain. Counted here on CPU with a torch function mode."""

import math

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from bench import training
from bench.config import TrainConfig
from bench.spiking import LIFNeuron, ParametricLIFNeuron
from bench.training import TrainingDiverged, fit

READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy}


class CountReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.reads += func in READS
        return func(*args, **(kwargs or {}))


def test_neurons_read_their_threshold_and_leak_once_per_value():
    neurons = [
        LIFNeuron(threshold=torch.tensor([0.5, 1.0]), spike_amplitude="threshold"),
        ParametricLIFNeuron(threshold=1.0),
    ]
    current = torch.rand(3, 2, 2, 4)
    with torch.no_grad():
        for neuron in neurons:
            neuron.run_sequence(current)  # the first calls read each value once
            neuron.emits_events()
            with CountReads() as counted:
                for _ in range(5):
                    neuron.reset_state()
                    neuron.run_sequence(current)
                    neuron.emits_events()
            assert counted.reads == 0, type(neuron).__name__
        neurons[1].leak_weight.add_(1.0)  # a new value (an optimizer step) is read again
        assert neurons[1]._leak_rate() == pytest.approx(torch.sigmoid(neurons[1].leak_weight).item())


def _problem(steps: int, bad_step: int | None = None):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    images, labels = torch.randn(steps * 2, 4), torch.randint(0, 3, (steps * 2,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=2)
    calls = 0

    def logits(x):
        nonlocal calls
        calls += 1
        out = model(x)
        return out * math.inf if calls == bad_step else out

    return model, logits, loader


def test_training_reads_its_sums_every_few_steps_and_names_the_step_that_diverged(monkeypatch):
    monkeypatch.setattr(training, "_sync_every", lambda device: 4)  # as on a GPU
    config = TrainConfig(epochs=1, lr=0.01, schedule="constant")
    reads = {}
    for steps in (8, 16):
        model, logits, loader = _problem(steps)
        with CountReads() as counted:
            fit(model, logits, loader, config, torch.device("cpu"))
        reads[steps] = counted.reads
    # Eight more steps are two more reads of the sums: the divergence check, the loss, the accuracy.
    assert reads[16] - reads[8] == 2 * 3

    model, logits, loader = _problem(steps=8, bad_step=3)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1, step 3"):
        fit(model, logits, loader, config, torch.device("cpu"))
