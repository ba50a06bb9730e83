"""The methods researchers compare against (QCFS, calibration, TET, hybrid, tdBN, PLIF): their
building blocks on hand-computed numbers, and every one end to end on a tiny setting."""

import math

import pytest
import torch
from torch import nn

from bench.api import get_method, list_methods
from bench.architectures import build_architecture
from bench.cli import main
from bench.conversion import fold_batch_norm, threshold_balance
from bench.spiking import (
    DirectEncoder,
    IFNeuron,
    ParametricLIFNeuron,
    SpikingNetwork,
    ThresholdDependentBatchNorm,
    pre_addition_norms,
)
from methods.calibration import CalibrationOptions, calibrate, correct_biases, mmse_thresholds, output_gap, relu_outputs
from methods.direct import DirectOptions, spiking_network
from methods.qcfs import QuantClipFloorShift
from methods.tet import tet_loss


def test_every_method_is_registered_with_family_and_paper():
    assert {"ann", "direct", "conversion", "qcfs", "calibration", "tet", "hybrid"} <= set(list_methods())
    families = {name: get_method(name).family for name in ("qcfs", "calibration", "tet", "hybrid")}
    assert families == {"qcfs": "conversion", "calibration": "conversion", "tet": "direct", "hybrid": "hybrid"}
    assert all(get_method(name).paper for name in families)


def test_qcfs_activation_and_its_gradients_by_hand():
    # L = 4, lambda = 8: a = 8 * floor(clip(z / 8, 0, 1) * 4 + 1/2) / 4
    activation = QuantClipFloorShift(levels=4, initial_lambda=8.0)
    z = torch.tensor([-3.0, 0.9, 1.0, 3.1, 9.0], requires_grad=True)
    a = activation(z)
    assert a.tolist() == [0.0, 0.0, 2.0, 4.0, 8.0]
    a.sum().backward()
    # d a / d z: 1 inside the clip (straight through the floor), 0 where clipped; level 0 (z = 0.9)
    # learns too, the clip coming before the floor (as in the reference code)
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    # d a / d lambda = level / L - z / lambda inside, 1 clipped at the top: (0 - 0.1125) + (0.25 - 0.125)
    # + (0.5 - 0.3875) + 1
    assert activation.threshold.grad.item() == pytest.approx(1.125)


def test_if_neuron_from_half_threshold_counts_the_qcfs_level():
    """Constant input z for T = L steps: the spike count is the activation's level for any z;
    for T = k L, when z is itself a level (what a QCFS layer feeds the next one)."""
    levels, lam = 4, 8.0
    activation = QuantClipFloorShift(levels, lam)

    def spike_count(z: torch.Tensor, steps: int) -> torch.Tensor:
        neuron = IFNeuron(threshold=lam, initial_potential=0.5)
        return neuron.run_sequence(z.expand(steps, *z.shape)).sum(0)

    z = torch.tensor([-2.0, 0.3, 1.0, 2.9, 5.5, 7.9, 12.0])
    with torch.no_grad():
        assert torch.equal(spike_count(z, levels), activation(z) * levels / lam)
        on_levels = torch.arange(levels + 1) * lam / levels
        for k in (2, 3, 5):
            assert torch.equal(spike_count(on_levels, k * levels), activation(on_levels) * k * levels / lam)


def test_tet_loss_by_hand():
    outputs = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # [T=2, B=1, K=2]
    labels = torch.tensor([0])
    cross_entropy = (math.log(2.0) + math.log(4 / 3)) / 2
    mse = (1 + 1 + (math.log(3.0) - 1) ** 2 + 1) / 4
    assert tet_loss(outputs, labels, lam=0.0).item() == pytest.approx(cross_entropy)
    assert tet_loss(outputs, labels, lam=0.05).item() == pytest.approx(0.95 * cross_entropy + 0.05 * mse)


def test_plif_leak_after_one_step_and_the_fused_simulation_agrees():
    neuron = ParametricLIFNeuron(initial_tau=2.0, threshold=1.0)  # k = 1 / tau = 0.5
    current = torch.full((3, 1, 1), 0.8)
    spikes = neuron.run_sequence(current[:1])
    assert spikes.item() == 0 and neuron.potential.item() == pytest.approx(0.4)  # 0 + 0.5 * (0.8 - 0)
    neuron.reset_state()
    trained = neuron.run_sequence(torch.full((6, 2, 3), 0.9))  # with autograd: the plain loop
    (trained.sum() + neuron.potential.sum()).backward()
    assert neuron.leak_weight.grad is not None and neuron.leak_weight.grad.item() != 0
    neuron.reset_state()
    with torch.no_grad():
        fused = neuron.run_sequence(torch.full((6, 2, 3), 0.9))
    assert torch.equal(fused, trained.detach())


def test_tdbn_scales_the_normalized_current_by_alpha_times_threshold():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    plain = nn.BatchNorm2d(3)(x)
    assert torch.allclose(ThresholdDependentBatchNorm(3, alpha=0.5, threshold=2.0)(x), plain, atol=1e-6)
    assert torch.allclose(ThresholdDependentBatchNorm(3, alpha=1.0, threshold=2.0)(x), 2 * plain, atol=1e-6)


def test_tdbn_scales_the_norms_before_each_residual_addition_by_one_over_sqrt2():
    ann = build_architecture("cifar_resnet8", 10, image_size=32, in_channels=3)
    assert pre_addition_norms(ann) == {
        "layer1.0.bn2",
        "layer2.0.bn2",
        "layer2.0.shortcut.1",
        "layer3.0.bn2",
        "layer3.0.shortcut.1",
    }
    network = spiking_network(ann, DirectOptions(batch_norm="tdbn", tdbn_alpha=2.0, threshold=0.5))
    alphas = {
        name.removeprefix("body."): norm.alpha
        for name, norm in network.named_modules()
        if isinstance(norm, ThresholdDependentBatchNorm)
    }
    assert alphas["bn1"] == 2.0 and alphas["layer2.0.bn1"] == 2.0
    assert alphas["layer2.0.bn2"] == pytest.approx(2.0 / math.sqrt(2))
    assert alphas["layer3.0.shortcut.1"] == pytest.approx(2.0 / math.sqrt(2))
    assert sum(a == pytest.approx(math.sqrt(2)) for a in alphas.values()) == 5 and len(alphas) == 9


def small_ann() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def test_bias_correction_moves_the_mean_snn_output_onto_the_mean_ann_activation():
    graph = fold_batch_norm(small_ann())
    torch.manual_seed(5)
    images = torch.randn(16, 3, 6, 6)
    steps = 2  # few steps: a large flooring error to correct
    body = threshold_balance(
        graph, mmse_thresholds(graph, [images], steps), reset_mode="subtract", initial_potential=0.5
    )
    model = SpikingNetwork(body, DirectEncoder()).eval()
    ann = relu_outputs(graph, images)
    before = output_gap(model, ann, "2", images, steps).mean((1, 2))  # per channel of the first layer
    correct_biases(model, ann, images, steps)
    after = output_gap(model, ann, "2", images, steps).mean((1, 2))
    # The SNN's channel means (0.24 on average in the ANN) start below the ANN's and move onto them;
    # one correction closes about half of each gap, as the IF neurons' floor is not linear.
    assert (before < -0.005).all()
    assert (after.abs() < 0.6 * before.abs()).all()


def test_advanced_calibration_corrects_each_neuron_potential():
    graph = fold_batch_norm(small_ann())
    images = torch.randn(16, 3, 6, 6)
    model = calibrate(
        graph,
        [images],
        CalibrationOptions(pipeline="advanced", target_time_steps=8, threshold_batches=1),
        DirectEncoder(),
    )
    offsets = [m.offset for m in model.spiking_layers().values()]
    assert len(offsets) == 2 and offsets[0].shape == (4, 6, 6) and any(o.abs().sum() > 0 for o in offsets)


def test_every_new_method_end_to_end_with_its_rows_in_the_leaderboard(tmp_path):
    methods = (
        "[ann, conversion, {name: qcfs, options: {epochs: 1}}, {name: calibration, options: {target_time_steps: 4}},"
        " tet, {name: hybrid, options: {epochs: 1, time_steps_train: 2}},"
        " {name: direct, label: direct-tdbn, options: {batch_norm: tdbn}},"
        " {name: direct, label: direct-plif, options: {neuron: plif}}]"
    )
    args = [
        "--quiet",
        "--epochs",
        "1",
        "--set",
        f"methods={methods}",
        "--set",
        "data.train_subset=64",
        "--set",
        "data.test_subset=20",
        "--set",
        "model.width=0.25",
        "--set",
        "eval.time_steps=[1,4]",
        "--results-dir",
        str(tmp_path / "results"),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    for label in ("qcfs", "qcfs-ann", "calibration", "tet", "hybrid", "direct-tdbn", "direct-plif"):
        assert f"| {label} " in leaderboard, label
    assert "target_time_steps=4" in leaderboard  # the calibration's T is part of its setting
