"""NIR export: a row whose neurons NIR can express exports exactly, one that resets by subtraction
is reported as not exact with the reason; the reference simulation reads NIR as SpikingJelly does."""

import pytest
import torch

from bench.architectures import build_architecture
from bench.spiking import DirectEncoder, IFNeuron, SpikingNetwork, replace_relus
from methods.direct import DirectOptions, spiking_network

nir = pytest.importorskip("nir")
from bench.ecosystem.nir import check_nir, export_nir, simulate_nir  # noqa: E402


def trained_looking(architecture: str = "cifar_resnet8") -> torch.nn.Module:
    """An ANN with batch-norm statistics and scales away from the identity, so folding matters."""
    torch.manual_seed(0)
    ann = build_architecture(architecture, 10, image_size=32, in_channels=3)
    for module in ann.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 2.0)
    return ann


@pytest.mark.parametrize(
    "options",
    [
        DirectOptions(neuron="if", reset="zero"),
        DirectOptions(neuron="lif", leak=0.8, reset="zero", detach_reset=True),
        DirectOptions(neuron="plif", reset="zero", detach_reset=True, plif_initial_tau=3.0),
        DirectOptions(neuron="if", reset="zero", batch_norm="tdbn", tdbn_alpha=0.7, threshold=0.8),
    ],
    ids=["if", "lif", "plif", "tdbn"],
)
def test_a_network_of_neurons_nir_expresses_exports_exactly(options, tmp_path):
    model = spiking_network(trained_looking(), options).eval()
    images = torch.rand(3, 3, 32, 32)
    nir.write(tmp_path / "row.nir", export_nir(model, images))
    verdict = check_nir(model, nir.read(tmp_path / "row.nir"), images, 12)
    assert verdict.exact, str(verdict)
    assert verdict.neuron_steps > 0 and str(verdict).startswith("exact")


def test_a_subtract_reset_row_is_reported_not_exact_with_its_reason(tmp_path):
    model = spiking_network(trained_looking(), DirectOptions(neuron="if", reset="subtract")).eval()
    images = torch.rand(3, 3, 32, 32)
    graph = export_nir(model, images)
    nir.write(tmp_path / "row.nir", graph)
    read = nir.read(tmp_path / "row.nir")
    assert read.nodes["act1"].metadata["spikebench_departures"] == "subtract reset"  # kept in the file
    verdict = check_nir(model, read, images, 12)
    assert not verdict.exact and verdict.mismatches > 0
    assert str(verdict).startswith("not exact: subtract reset (")


def test_per_channel_thresholds_and_channel_scales_export_exactly():
    """Per-neuron thresholds are NIR arrays; a converter's channel scale on a shortcut is a NIR Scale."""
    from bench.conversion.normalize import ChannelScale

    torch.manual_seed(1)
    body = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        ChannelScale(torch.tensor([0.5, 1.0, 2.0, 1.5])),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 5),
    )
    replace_relus(body, lambda name: IFNeuron(threshold=torch.tensor([0.3, 0.6, 0.9, 1.2]), reset_mode="zero"))
    model = SpikingNetwork(body, DirectEncoder()).eval()
    images = torch.rand(2, 3, 8, 8)
    graph = export_nir(model, images)
    assert any(isinstance(node, nir.Scale) for node in graph.nodes.values())
    verdict = check_nir(model, graph, images, 10)
    assert verdict.exact, str(verdict)


def test_the_reference_simulation_reads_nir_as_spikingjelly_does():
    """An independent reading of the same file: SpikingJelly's NIR import at dt = 1 gives the same outputs."""
    from_nir = pytest.importorskip("spikingjelly.activation_based.nir_exchange")
    model = spiking_network(trained_looking(), DirectOptions(neuron="if", reset="zero")).eval()
    images = torch.rand(2, 3, 32, 32)
    graph = export_nir(model, images)
    inputs = images.unsqueeze(0).expand(6, *images.shape)
    ours = simulate_nir(graph, inputs).outputs
    imported = from_nir.import_from_nir(graph, dt=1.0, step_mode="m")
    with torch.no_grad():
        theirs, _ = imported(inputs)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_spikebench_export_writes_the_file_and_states_the_verdict(tmp_path, capsys):
    from bench.cli import spikebench

    arguments = ["export", "conversion", "--quiet", "--epochs", "1", "--set", "data.train_subset=64"]
    arguments += ["--set", "model.name=cifar_vgg_tiny", "--set", f"cache_dir={tmp_path / 'cache'}"]
    arguments += ["--out", str(tmp_path / "conversion.nir"), "--check-steps", "8", "--check-images", "2"]
    assert spikebench(arguments) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "conversion.nir").is_file()
    assert "conversion: not exact: subtract reset; spiking-softmax readout" in printed
    assert spikebench(["export", "no-such-row", "--quiet"]) == 2
    assert "no row 'no-such-row' in this config" in capsys.readouterr().err


def test_a_potential_equal_to_its_threshold_is_named_as_the_difference():
    """spikebench fires at v >= theta, NIR at v > theta: a current of exactly 0.5 reaches 1.0 in two steps."""
    body = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(1, 1, bias=False), torch.nn.ReLU(), torch.nn.Linear(1, 2)
    )
    with torch.no_grad():
        body[1].weight.fill_(0.5)
    replace_relus(body, lambda name: IFNeuron(threshold=1.0, reset_mode="zero"))
    model = SpikingNetwork(body, DirectEncoder()).eval()
    images = torch.ones(1, 1, 1, 1)
    verdict = check_nir(model, export_nir(model, images), images, 4)
    # spikebench: v = 0.5, 1.0 (fires), 0.5, 1.0 (fires); NIR: 0.5, 1.0 (a tie, no spike), 1.5 (fires), 0.5
    assert not verdict.exact and verdict.ties == 1 and verdict.mismatches == 3
    assert "a potential equal to its threshold (1 times; spikebench fires at v >= theta" in str(verdict)
