"""SpikingJelly and snnTorch networks in the harness: the curve the harness reads in time chunks
equals each library's own step-by-step simulation, and the example plugins become rows."""

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.ecosystem.adapters import from_snntorch, from_spikingjelly
from bench.errors import UserError
from bench.harness import evaluate
from bench.records import read_records

spikingjelly = pytest.importorskip("spikingjelly")
snntorch = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

CPU = torch.device("cpu")
STEPS = 8
GRID = [1, 2, 3, 5, 8]


def spikingjelly_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(3, 6, 3, padding=1),
        layer.BatchNorm2d(6),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        layer.AvgPool2d(2),
        layer.SeqToANNContainer(nn.Conv2d(6, 8, 3, padding=1)),
        neuron.IFNode(v_threshold=0.5, v_reset=None),  # subtract reset
        layer.Flatten(),
        layer.Linear(8 * 4 * 4, 5),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].weight.uniform_(1.0, 3.0)
    return net.eval()


def snntorch_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        snntorch.Leaky(beta=0.8, threshold=0.6, spike_grad=snn_surrogate.atan(), init_hidden=True),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        snntorch.Leaky(beta=1.0, reset_mechanism="zero", init_hidden=True),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )
    with torch.no_grad():
        net[1].weight.uniform_(1.0, 3.0)
    return net.eval()


def spikingjelly_steps(net: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """SpikingJelly's own simulation, one step per call (its multi-step mode on `[1, B, ...]`, which
    `SeqToANNContainer` needs): outputs [T, B, K] and the spikes of all neurons."""
    functional.set_step_mode(net, "m")
    functional.reset_net(net)
    return _steps(net, images.unsqueeze(0), neuron.BaseNode)


def snntorch_steps(net: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    for module in net.modules():
        if isinstance(module, snntorch.SpikingNeuron):
            module.mem = torch.zeros(0)
    return _steps(net, images, snntorch.SpikingNeuron)


def _steps(net, images, neuron_type):
    spikes = 0

    def count(module, inputs, output):
        nonlocal spikes
        spikes += int((output[0] if isinstance(output, tuple) else output).sum())

    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, neuron_type)]
    with torch.no_grad():
        outputs = torch.stack([net(images).reshape(-1, 5) for _ in range(STEPS)])
    for handle in handles:
        handle.remove()
    return outputs, spikes


@pytest.mark.parametrize(
    "build, adapt, simulate",
    [(spikingjelly_net, from_spikingjelly, spikingjelly_steps), (snntorch_net, from_snntorch, snntorch_steps)],
    ids=["spikingjelly", "snntorch"],
)
def test_the_harness_reads_the_library_network_as_the_library_simulates_it(build, adapt, simulate):
    images = torch.rand(6, 3, 8, 8)
    native, native_spikes = simulate(build(), images)
    labels = native.cumsum(0)[3].argmax(1)  # right at T = 4 by construction, not necessarily at other T
    labels[:2] = (labels[:2] + 1) % 5
    model = adapt(build())
    assert native_spikes > 0, "the test network must spike"

    with torch.no_grad():
        model.reset_state()
        chunks = torch.cat([model(images, 3), model(images, 5)])  # the state carries over the chunks
    assert torch.allclose(chunks, native, atol=1e-5)

    evaluation = evaluate(model, [(images, labels)], GRID, CPU, chunk_size=3, num_classes=5)
    readout = native.cumsum(0)
    for t in GRID:
        hits = (readout[t - 1].argmax(1) == labels).numpy()
        assert (evaluation.correct[t] == hits).all(), t
    neurons = sum(evaluation.neurons_per_sample.values())
    assert evaluation.spikes_per_neuron[STEPS] * neurons * len(images) == pytest.approx(native_spikes)
    assert evaluation.sops[STEPS] > 0 and evaluation.macs[STEPS] > 0  # the first layer reads the analog image


def test_networks_the_adapters_cannot_run_are_refused_in_one_line():
    with pytest.raises(UserError, match="no spikingjelly neurons"):
        from_spikingjelly(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(UserError, match="init_hidden=True"):
        from_snntorch(nn.Sequential(nn.Linear(2, 2), snntorch.Leaky(beta=0.9)))
    with pytest.raises(UserError, match="graded_spikes_factor"):
        from_snntorch(nn.Sequential(snntorch.Leaky(beta=0.9, init_hidden=True, graded_spikes_factor=2.0)))


def test_the_adapted_network_trains_through_the_library_neurons():
    model = from_spikingjelly(spikingjelly_net().train())
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    model.reset_state()
    loss = nn.functional.cross_entropy(model(images, 4).mean(0), labels)
    loss.backward()
    first = model.body[0].weight.grad
    assert first is not None and first.abs().sum() > 0, "no surrogate gradient reached the first layer"


def test_the_example_plugins_become_rows_of_a_leaderboard(tmp_path):
    arguments = [
        "--quiet",
        "--plugin",
        "examples.spikingjelly_plugin",
        "--plugin",
        "examples.snntorch_plugin",
        "--methods",
        "spikingjelly-lif,snntorch-leaky",
        "--epochs",
        "1",
        "--set",
        "data.train_subset=64",
        "--set",
        "data.test_subset=32",
        "--set",
        "eval.time_steps=[1,2,4]",
        "--results-dir",
        str(tmp_path / "results"),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    assert main(arguments) == 0
    records = read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")
    assert sorted(set(zip(records["label"], records["status"]))) == [
        ("snntorch-leaky", "ok"),
        ("spikingjelly-lif", "ok"),
    ]
    assert (records["sops_per_sample"] > 0).all()
    assert set(records["architecture"]) == {  # the plugins' own networks, not the config's model.name
        "spikingjelly: 3 conv-BN-LIF stages, width 32",
        "snntorch: 3 conv-BN-Leaky stages, width 32",
    }
    board = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    assert "| spikingjelly-lif" in board and "| snntorch-leaky" in board
