"""ANN-to-SNN conversion: BN folding, calibration, the two normalizations, latency, the method end to end."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from bench.api import get_method
from bench.architectures import BasicBlock, build_architecture
from bench.config import MethodSpec, RunConfig
from bench.conversion import (
    ChannelScale,
    StreamingQuantile,
    activation_scales,
    convert,
    fold_batch_norm,
    threshold_balance,
    weight_normalize,
)
from bench.errors import UserError
from bench.runner import run_suite
from bench.spiking import DirectEncoder, SpikingNetwork


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
            module.running_var.copy_(0.5 + 1.5 * torch.rand(channels, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(channels, generator=generator))
            module.bias.data.copy_(0.4 * torch.rand(channels, generator=generator) - 0.2)
    return model.eval()


def small_resnet(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batch_norms(build_architecture("cifar_resnet8", 10, width=0.5)).to(dtype)


def record_spikes(
    network: SpikingNetwork, images: torch.Tensor, time_steps: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Binary spike trains `[T*B, ...]` of every neuron layer, and the outputs `[T, B, K]`."""
    trains = {}
    hooks = [
        neuron.register_forward_hook(lambda module, inputs, output, name=name: trains.__setitem__(name, output != 0))
        for name, neuron in network.spiking_layers().items()
    ]
    network.reset_state()
    with torch.no_grad():
        outputs = network(images, time_steps)
    for hook in hooks:
        hook.remove()
    return trains, outputs


def readout(network: SpikingNetwork, images: torch.Tensor, time_steps: int) -> torch.Tensor:
    """The harness's prediction scores at T: the mean of the first T outputs."""
    network.reset_state()
    with torch.no_grad():
        return network(images, time_steps).mean(0)


# --- Folding --------------------------------------------------------------------------------------


def test_folding_batch_norm_keeps_the_outputs_of_a_residual_net_with_projections():
    ann = small_resnet()
    assert any(isinstance(m, nn.Sequential) for m in ann.layer2[0].modules())  # a projection shortcut
    folded = fold_batch_norm(ann)
    images = torch.randn(6, 3, 32, 32)
    torch.testing.assert_close(folded(images), ann(images), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in ann.modules())  # the ANN is left as it was


def tiny_config(tmp_path, methods, **model) -> RunConfig:
    config = RunConfig(
        seed=0, device="cpu", results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), methods=methods
    )
    config.data = dataclasses.replace(config.data, train_subset=96, test_subset=40, batch_size=32, eval_batch_size=20)
    config.model = dataclasses.replace(config.model, **model)
    config.train = dataclasses.replace(config.train, epochs=1, amp=False)
    config.eval = dataclasses.replace(config.eval, time_steps=[1, 8, 64])
    return config


def test_layers_that_cannot_spike_are_refused_before_training(tmp_path):
    with pytest.raises(UserError, match="pooling=avg"):
        convert(build_architecture("cifar_vgg_tiny", 10, pooling="max"), [torch.randn(2, 3, 32, 32)])
    config = tiny_config(tmp_path, [MethodSpec("conversion")], name="cifar_vgg_tiny", pooling="max")
    with pytest.raises(UserError, match="MaxPool2d"):
        run_suite(config)
    assert not list((tmp_path / "cache").glob("ann-*.pt"))


# --- Calibration ----------------------------------------------------------------------------------


@pytest.mark.parametrize("quantile", [0.5, 0.999, 0.9999, 1.0])
def test_streaming_quantile_matches_torch_quantile(quantile):
    generator = torch.Generator().manual_seed(1)
    chunks = [torch.randn(3, size, generator=generator).relu() for size in (5000, 5000, 4321)]
    stream = StreamingQuantile(quantile, max_total=3 * 5000)
    for chunk in chunks:
        stream.update(chunk)
    expected = torch.quantile(torch.cat(chunks, dim=1), quantile, dim=1)
    assert torch.equal(stream.result(), expected)
    assert stream.keep <= 3 * 5000 * (1 - quantile) + 4  # only the top values are kept


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_percentile_calibration_matches_torch_quantile_on_the_same_activations(granularity):
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU())
    batches = [torch.randn(7, 3, 12, 12) for _ in range(3)]
    activations = {"1": [], "3": []}
    hooks = [network[i].register_forward_hook(lambda m, i, o, key=str(i): activations[key].append(o)) for i in (1, 3)]
    with torch.no_grad():
        for images in batches:
            network(images)
    for hook in hooks:
        hook.remove()
    scales = activation_scales(
        network, batches, statistic="percentile", percentile=99.9, granularity=granularity, max_batches=3
    )
    for name, outputs in activations.items():
        values = torch.cat(outputs)
        rows = values.transpose(0, 1).flatten(1) if granularity == "channel" else values.reshape(1, -1)
        expected = torch.quantile(rows, 0.999, dim=1)
        assert torch.equal(scales[name], expected.squeeze(0) if granularity == "layer" else expected)
    maxima = activation_scales(network, batches, statistic="max", max_batches=3)
    assert maxima["1"] == torch.cat(activations["1"]).max()


def test_calibration_uses_only_the_requested_batches_and_never_gives_zero_scales():
    network = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    network[0].bias.data = torch.tensor([-100.0, 0.0, 0.0])  # channel 0 never fires
    batches = [torch.randn(8, 4), torch.randn(8, 4) * 1000]
    scales = activation_scales(network, batches, statistic="max", granularity="channel", max_batches=1)
    assert scales["1"][0] == scales["1"].max() > 0
    assert scales["1"].max() < 100  # the huge second batch was not used


# --- Normalization --------------------------------------------------------------------------------


def both_normalizations(graph, scales, **neuron_options):
    return (
        SpikingNetwork(normalize(graph, scales, **neuron_options), DirectEncoder()).eval()
        for normalize in (threshold_balance, weight_normalize)
    )


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_weight_and_threshold_normalization_give_identical_spike_trains(granularity):
    # Weight normalization divides every current by the neuron's scale, which float rounding does
    # not do exactly; in float64 the two must agree spike for spike, in every layer and step.
    ann = small_resnet(torch.float64)
    graph = fold_batch_norm(ann)
    scales = activation_scales(
        graph, [torch.randn(16, 3, 32, 32, dtype=torch.float64)], granularity=granularity, max_batches=1
    )
    balanced, normalized = both_normalizations(graph, scales, initial_potential=0.5)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    balanced_spikes, balanced_outputs = record_spikes(balanced, images, 30)
    normalized_spikes, normalized_outputs = record_spikes(normalized, images, 30)
    assert set(balanced_spikes) == set(normalized_spikes) and len(balanced_spikes) == 7
    for name, train in balanced_spikes.items():
        assert train.any(), f"{name} never fired: the test would prove nothing"
        assert torch.equal(train, normalized_spikes[name]), name
    torch.testing.assert_close(balanced_outputs, normalized_outputs)
    # The identity shortcut of layer1.0 carries act1's scale into an add at layer1.0.act2's scale.
    assert any(isinstance(module, ChannelScale) for module in normalized.modules())
    assert all(neuron.threshold.max() == 1 for neuron in normalized.spiking_layers().values())


def test_power_of_two_scales_make_the_normalizations_bitwise_equal_in_float32():
    # Scaling by a power of two is exact in floating point, so even float32 spikes must agree.
    ann = small_resnet()
    graph = fold_batch_norm(ann)
    scales = activation_scales(graph, [torch.randn(16, 3, 32, 32)], granularity="channel", max_batches=1)
    scales = {name: 2.0 ** scale.log2().round() for name, scale in scales.items()}
    balanced, normalized = both_normalizations(graph, scales, reset_mode="zero")
    images = torch.randn(2, 3, 32, 32)
    balanced_spikes, balanced_outputs = record_spikes(balanced, images, 20)
    normalized_spikes, normalized_outputs = record_spikes(normalized, images, 20)
    assert all(torch.equal(train, normalized_spikes[name]) for name, train in balanced_spikes.items())
    assert torch.equal(balanced_outputs, normalized_outputs)


def test_timm_resnet18_folds_exactly_and_both_normalizations_spike_identically():
    torch.manual_seed(0)
    ann = randomize_batch_norms(build_architecture("resnet18", 10, image_size=8)).double()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    graph = fold_batch_norm(ann)
    torch.testing.assert_close(graph(images), ann(images))
    scales = activation_scales(graph, [torch.randn(4, 3, 8, 8, dtype=torch.float64)], max_batches=1)
    balanced, normalized = both_normalizations(graph, scales)
    balanced_spikes, _ = record_spikes(balanced, images[:1], 6)
    normalized_spikes, _ = record_spikes(normalized, images[:1], 6)
    assert len(balanced_spikes) == 17
    assert all(torch.equal(train, normalized_spikes[name]) for name, train in balanced_spikes.items())


# --- Latency --------------------------------------------------------------------------------------


def test_if_layer_rate_approaches_relu_with_error_like_one_over_t():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(16, 64), nn.ReLU())
    inputs = torch.randn(32, 16)
    target = layer(inputs).detach()
    body, scales = convert(layer, [inputs], statistic="max", max_batches=1)
    network = SpikingNetwork(body, DirectEncoder()).eval()
    scale = scales["1"].item()
    errors = {t: (readout(network, inputs, t) - target).abs().max().item() for t in (10, 100, 1000)}
    for time_steps, error in errors.items():
        # Reset by subtraction keeps the residue below one threshold: |rate * scale - relu| < scale / T.
        assert error * time_steps <= scale * (1 + 1e-4), (time_steps, error)
    assert errors[1000] < errors[100] < errors[10]
    assert errors[10] > 0.1 * scale / 10  # the bound is tight, not vacuous


def test_converted_residual_block_error_falls_as_t_grows():
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        BasicBlock(8, 16, stride=2),
        BasicBlock(16, 16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    ann = randomize_batch_norms(ann)
    images = torch.randn(16, 3, 8, 8)
    target = ann(images).detach()
    body, _ = convert(ann, [images], statistic="max", max_batches=1, initial_potential=0.5)
    network = SpikingNetwork(body, DirectEncoder()).eval()
    errors = [(readout(network, images, t) - target).abs().mean().item() for t in (4, 32, 256)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1 * errors[0]


# --- The method -----------------------------------------------------------------------------------


def test_options_are_validated_before_any_work():
    entry = get_method("conversion")
    assert entry.family == "conversion" and "Rueckauer" in entry.paper
    for bad, message in (
        (dict(percentile=0), "percentile"),
        (dict(calibration_batches=0), "calibration_batches"),
        (dict(initial_potential=1.0), "initial_potential"),
        (dict(normalization="layer"), "normalization"),
        (dict(thresholds=1), "unknown key"),
    ):
        with pytest.raises(UserError, match=message):
            entry.make_options(bad, "methods[conversion].options.")


def test_conversion_runs_end_to_end_through_the_suite(tmp_path):
    config = tiny_config(
        tmp_path,
        [
            MethodSpec("ann"),
            MethodSpec("conversion"),
            MethodSpec(
                "conversion",
                label="conversion-direct-threshold",
                options=dict(input_coding="direct", normalization="threshold", granularity="channel"),
            ),
        ],
        name="cifar_resnet8",
        width=0.5,
    )
    leaderboard = run_suite(config)
    records = [json.loads(line) for line in (leaderboard.parent / "records.jsonl").read_text().splitlines()]
    converted = [r for r in records if r["method"] == "conversion"]
    assert {(r["label"], r["time_steps"]) for r in converted} == {
        (label, t) for label in ("conversion", "conversion-direct-threshold") for t in (1, 8, 64)
    }
    assert all(r["status"] == "ok" and r["family"] == "conversion" and r["time_steps_train"] == 0 for r in converted)
    assert all(r["notes"]["calibration_wall_s"] > 0 and r["notes"]["calibration_images"] == 80 for r in converted)
    # The converted net is the ann's own network: one cached ANN serves both methods.
    assert len(list((tmp_path / "cache").glob("ann-*.pt"))) == 1
    text = leaderboard.read_text()
    assert "| conversion " in text and "| conversion-direct-threshold " in text
