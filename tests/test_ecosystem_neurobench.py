"""NeuroBench's own metric code beside the suite's counters: totals equal where the conventions
agree, and each difference named as documented (`bench.ecosystem.neurobench`)."""

import pytest
import torch
from torch import nn

from bench.spiking import DirectEncoder, IFNeuron, PoissonEncoder, SpikingNetwork, replace_relus

pytest.importorskip("neurobench")
from bench.ecosystem.neurobench import compare  # noqa: E402


def tiny_snn(encoder: nn.Module, padding: int = 1) -> SpikingNetwork:
    """conv -> IF -> conv -> IF -> average pool -> linear, with weights that make it fire."""
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=padding),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3 if padding == 0 else 6 * 4 * 4, 5),
    )
    with torch.no_grad():
        body[2].weight.mul_(3.0)
    replace_relus(body, lambda name: IFNeuron(threshold=0.4))
    return SpikingNetwork(body, encoder).eval()


def test_with_event_input_the_totals_and_sparsity_equal_neurobench_and_only_labels_differ():
    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    result = compare(tiny_snn(PoissonEncoder(0)), images, labels, time_steps=6)
    assert result.totals_agree, result
    assert result.sops > 0 and result.macs == 0  # every layer is fed events, for the suite
    assert result.sparsity == pytest.approx(result.neurobench_sparsity, abs=1e-9)
    # NeuroBench calls the Poisson image (amplitude = pixel value) and the pooled spikes MACs.
    assert [difference.split(":")[0] for difference in result.differences] == ["body.0", "body.6"]
    assert all("its input is not in {-1, 0, 1}" in difference for difference in result.differences)
    assert result.neurobench_macs > 0 and result.neurobench_acs > 0


def test_with_an_analog_image_the_totals_differ_by_the_padded_border_of_the_first_layer():
    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    padded = compare(tiny_snn(DirectEncoder()), images, labels, time_steps=6)
    assert not padded.totals_agree
    assert padded.differences[0].startswith("body.0: spikebench") and "no padded border" in padded.differences[0]
    # Without padding (and without zero pixels) the first layer counts alike: only the pooled classifier differs.
    unpadded = compare(tiny_snn(DirectEncoder(), padding=0), images + 0.1, labels, time_steps=6)
    assert unpadded.totals_agree, unpadded
    assert [difference.split(":")[0] for difference in unpadded.differences] == ["body.6"]


def test_spikebench_neurobench_writes_a_report_with_every_row(tmp_path, capsys):
    from bench.cli import spikebench

    arguments = ["neurobench", "--quiet", "--methods", "ann,conversion", "--epochs", "1", "--images", "4"]
    arguments += ["--set", "data.train_subset=64", "--set", "model.name=cifar_vgg_tiny", "--time-steps", "4"]
    arguments += ["--set", f"cache_dir={tmp_path / 'cache'}", "--results-dir", str(tmp_path / "results")]
    assert spikebench(arguments) == 0
    report = (tmp_path / "results" / "tiny-imagenette" / "neurobench.md").read_text()
    assert "| ann |" in report and "| conversion |" in report
    assert "NeuroBench counts ACs when a layer's input lies in {-1, 0, 1}" in report
