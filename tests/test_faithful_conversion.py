"""The conversion family against independent re-implementations of its reference code.

Each reference function below is written from the paper's equations and the reference code's
behaviour (named in each docstring), with plain tensors and explicit time loops, and shares no
code with `bench` or `methods`: QCFS (putshua/ANN_SNN_QCFS), calibration (yhhhli/SNN_Calibration)
and conversion (SNN Toolbox). Small networks, a few steps, exact or float-rounding agreement.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.conversion import convert, fold_batch_norm
from bench.spiking import DirectEncoder, SpikingNetwork
from bench.spiking.readout import SpikingSoftmax
from methods.calibration import CalibrationOptions, calibrate, mmse_thresholds, relu_outputs
from methods.conversion import ConversionOptions, converted_network
from methods.qcfs import QuantClipFloorShift, convert_qcfs, qcfs_network
from tests.test_methods import small_ann as ann_with_batch_norm

# --- QCFS --------------------------------------------------------------------------------------


class _FloorPassingGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.floor()

    @staticmethod
    def backward(ctx, grad):
        return grad


def reference_qcfs(z: torch.Tensor, lam: torch.Tensor, levels: int) -> torch.Tensor:
    """ANN_SNN_QCFS `Models/layer.py`, `IF.forward` with T = 0: divide, clamp to [0, 1], floor of
    x L + 1/2 with the gradient passed through, divide by L, multiply back."""
    x = torch.clamp(z / lam, 0, 1)
    return _FloorPassingGradient.apply(x * levels + 0.5) / levels * lam


def test_torch_clamp_passes_no_gradient_at_its_bounds_and_one_inside():
    # What the QCFS fix relies on: with the floor first, levels 0 and L sat on these bounds.
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    x.clamp(0, 1).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_qcfs_values_and_gradients_equal_the_reference_clamp_then_floor():
    torch.manual_seed(0)
    z = (torch.randn(4096) * 4).requires_grad_()
    ours = QuantClipFloorShift(levels=4, initial_lambda=3.0)
    ours(z).square().sum().backward()
    z_ref = z.detach().clone().requires_grad_()
    lam = torch.tensor(3.0, requires_grad=True)
    reference_qcfs(z_ref, lam, 4).square().sum().backward()
    assert torch.equal(ours(z.detach()), reference_qcfs(z.detach(), lam.detach(), 4))
    assert torch.allclose(z.grad, z_ref.grad)
    assert ours.threshold.grad.item() == pytest.approx(lam.grad.item(), rel=1e-5)


def test_qcfs_gradient_reaches_every_input_inside_the_clip_range():
    # 0 < z < lambda, levels 0 and L included: the dead zone of a floor before the clip is gone.
    lam, levels = 8.0, 4
    z = torch.linspace(0.01, lam - 0.01, 999, requires_grad=True)
    QuantClipFloorShift(levels, lam)(z).sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    below_and_above = torch.tensor([-1.0, -0.01, 8.01, 20.0], requires_grad=True)
    QuantClipFloorShift(levels, lam)(below_and_above).sum().backward()
    assert below_and_above.grad.tolist() == [0.0, 0.0, 0.0, 0.0]


def qcfs_ann() -> nn.Module:
    network = ann_with_batch_norm()
    torch.manual_seed(3)
    network[1].running_mean.uniform_(-0.2, 0.2)
    network[1].running_var.uniform_(0.5, 2.0)
    network = qcfs_network(network, type("Options", (), {"levels": 4, "initial_lambda": 1.5})())
    network[2].threshold.data.fill_(1.2)
    return network.eval()


def reference_qcfs_snn(network: nn.Module, images: torch.Tensor, steps: int) -> torch.Tensor:
    """ANN_SNN_QCFS `IF.forward` with T > 0 on every QCFS layer: membrane from 0.5 theta, add the
    current, spike where membrane - theta >= 0, subtract theta, output spikes times theta; the
    other layers (batch norm in eval mode included) run unchanged at every step. Logits [T, B, K]."""
    membranes: dict[int, torch.Tensor] = {}
    outputs = []
    for _ in range(steps):
        x = images
        for index, layer in enumerate(network):
            if isinstance(layer, QuantClipFloorShift):
                theta = layer.threshold.detach()
                membrane = membranes.get(index, torch.full_like(x, 0.5) * theta) + x
                spikes = (membrane - theta >= 0).float() * theta
                membranes[index] = membrane - spikes
                x = spikes
            else:
                x = layer(x)
        outputs.append(x)
    return torch.stack(outputs)


@torch.no_grad()
def test_converted_qcfs_network_equals_the_reference_spiking_mode():
    network = qcfs_ann()
    images = torch.randn(6, 3, 5, 5)
    expected = reference_qcfs_snn(network, images, steps=12)
    ours = SpikingNetwork(convert_qcfs(copy.deepcopy(network)), DirectEncoder()).eval()
    ours.reset_state()
    assert torch.allclose(ours(images, 12), expected, atol=1e-5)


# --- calibration -------------------------------------------------------------------------------


def small_ann(seed: int = 1) -> nn.Module:
    """conv-ReLU-conv-ReLU-pool-linear without batch norm: the references below read its weights as they are."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def reference_calibrated_snn(weights, biases, thresholds, initial, images, steps, target):
    """SNN_Calibration `SpikeModule.forward` for conv-ReLU layers then the analog pool and classifier:
    x = conv(input) + theta * 0.5 / target at every step, membrane from `initial` (0 before the
    potential correction), fire at >=, subtract theta, spikes of amplitude theta. Returns each
    layer's time-averaged spike output and the summed logits."""
    membranes = [torch.zeros(1) + start for start in initial]
    totals = [0.0 for _ in thresholds]
    logits = 0.0
    for _ in range(steps):
        x = images
        for index, (weight, bias, theta) in enumerate(zip(weights[:-1], biases[:-1], thresholds)):
            current = F.conv2d(x, weight, bias, padding=1) + theta * 0.5 / target
            membranes[index] = membranes[index] + current
            spikes = (membranes[index] >= theta).float() * theta
            membranes[index] = membranes[index] - spikes
            totals[index] = totals[index] + spikes
            x = spikes
        logits = logits + F.linear(x.mean((2, 3)), weights[-1], biases[-1])
    return [total / steps for total in totals], logits


def reference_calibration(ann: nn.Module, thresholds, images, target, pipeline):
    """SNN_Calibration `bias_corr_model` / `emp_bias_corr` on one batch, layer by layer from the
    input: the ANN output against the SNN output over the target T, then bias -= per-channel mean
    gap (light) or initial potential = T * per-neuron (batch-mean) gap (advanced)."""
    layers = [m for m in ann if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = [m.weight.detach() for m in layers]
    biases = [m.bias.detach().clone() for m in layers]
    ann_outputs, x = [], images
    for module in ann:
        x = module(x)
        if isinstance(module, nn.ReLU):
            ann_outputs.append(x)
    initial = [torch.zeros(1) for _ in thresholds]
    for index in range(len(thresholds)):
        snn_means, _ = reference_calibrated_snn(weights, biases, thresholds, initial, images, target, target)
        gap = snn_means[index] - ann_outputs[index]
        if pipeline == "light":
            biases[index] = biases[index] - gap.mean((0, 2, 3))
        else:
            initial[index] = -gap.mean(0) * target
    return weights, biases, initial


@pytest.mark.parametrize("pipeline", ["light", "advanced"])
@torch.no_grad()
def test_calibration_corrections_and_outputs_equal_the_reference(pipeline):
    ann = small_ann()
    torch.manual_seed(5)
    images = torch.randn(16, 3, 6, 6)
    target = 4
    options = CalibrationOptions(pipeline=pipeline, target_time_steps=target, threshold_batches=1)
    graph = fold_batch_norm(ann)
    model = calibrate(graph, [images], options, DirectEncoder())
    thresholds = [t.item() for t in mmse_thresholds(graph, [images], target).values()]
    weights, biases, initial = reference_calibration(ann, thresholds, images, target, pipeline)
    neurons = list(model.spiking_layers().values())
    convs = [m for m in model.body.modules() if isinstance(m, nn.Conv2d)]
    if pipeline == "light":
        for conv, bias in zip(convs, biases):
            assert torch.allclose(conv.bias, bias, atol=1e-6)
    else:
        for neuron, start in zip(neurons, initial):
            assert torch.allclose(neuron.offset, start.expand_as(neuron.offset), atol=1e-5)
    for steps in (1, 4, 9):  # the target T and others: the shift stays theta / (2 * target) a step
        _, expected = reference_calibrated_snn(weights, biases, thresholds, initial, images, steps, target)
        model.reset_state()
        assert torch.allclose(model(images, steps).sum(0), expected, atol=1e-4), steps


@torch.no_grad()
def test_calibration_without_the_input_shift_differs_from_the_reference():
    """The equivalence test above can fail: spikebench's half-threshold start is another network."""
    ann = small_ann()
    torch.manual_seed(5)
    images = torch.randn(16, 3, 6, 6)
    graph = fold_batch_norm(ann)
    shifted = calibrate(graph, [images], CalibrationOptions(target_time_steps=4, threshold_batches=1), DirectEncoder())
    started = calibrate(
        graph,
        [images],
        CalibrationOptions(target_time_steps=4, threshold_batches=1, half_threshold="initial_potential"),
        DirectEncoder(),
    )
    outputs = []
    for model in (shifted, started):
        model.reset_state()
        outputs.append(model(images, 2))
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)


# --- conversion (SNN Toolbox) ------------------------------------------------------------------


def reference_toolbox_scales(ann: nn.Module, images: torch.Tensor, percentile: float = 99.9) -> list[float]:
    """SNN Toolbox `normalize_parameters`: for each layer with a ReLU, np.percentile of its non-zero
    activations on the normalization set (numpy's linear interpolation)."""
    scales, x = [], images
    for module in ann:
        x = module(x)
        if isinstance(module, nn.ReLU):
            values = x.detach().numpy().ravel()
            scales.append(float(np.percentile(values[np.nonzero(values)], percentile)))
    return scales


def reference_toolbox_snn(ann: nn.Module, scales, images, steps, uniform):
    """The toolbox's INI simulator on a conv-ReLU-conv-ReLU-pool-flatten-linear network:
    W' = W lambda_in / lambda_l, b' = b / lambda_l (the output layer keeps lambda 1), IF neurons of
    threshold 1 from 0, fire at >=, subtract reset, the analog image every step, and a softmax
    output that integrates without reset and spikes where uniform <= softmax(potential).
    Returns the output spikes [T, B, K]."""
    convs = [m for m in ann if isinstance(m, nn.Conv2d)]
    linear = ann[-1]
    weights, biases, previous = [], [], 1.0
    for conv, scale in zip(convs, scales):
        weights.append(conv.weight.detach() * previous / scale)
        biases.append(conv.bias.detach() / scale)
        previous = scale
    out_weight, out_bias = linear.weight.detach() * previous, linear.bias.detach()
    membranes = [0.0, 0.0]
    softmax_potential = 0.0
    spikes_out = []
    for step in range(steps):
        x = images
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            membranes[index] = membranes[index] + F.conv2d(x, weight, bias, padding=1)
            spikes = (membranes[index] >= 1).float()
            membranes[index] = membranes[index] - spikes
            x = spikes
        softmax_potential = softmax_potential + F.linear(x.mean((2, 3)), out_weight, out_bias)
        spikes_out.append((uniform[step] <= torch.softmax(softmax_potential, dim=1)).float())
    return torch.stack(spikes_out)


@torch.no_grad()
def test_conversion_scales_and_spikes_equal_the_snn_toolbox():
    ann = small_ann()
    torch.manual_seed(7)
    calibration = torch.randn(32, 3, 6, 6)
    images = torch.randn(8, 3, 6, 6)
    steps, seed = 20, 11
    expected_scales = reference_toolbox_scales(ann, calibration)
    model = converted_network(ann, [calibration], ConversionOptions(), seed).eval()  # the method's defaults
    neurons = [m for m in model.spiking_layers().values() if not isinstance(m, SpikingSoftmax)]
    convs = [m for m in model.body.modules() if isinstance(m, nn.Conv2d)]
    # Weight normalization by the toolbox's scales: W' = W lambda_in / lambda_out, thresholds 1.
    assert torch.allclose(convs[0].weight, ann[0].weight / expected_scales[0], rtol=1e-5)
    assert all(n.threshold.item() == 1.0 and n.initial_potential == 0.0 for n in neurons)
    model.reset_state()
    ours = model(images, steps)
    uniform = torch.rand((steps, 8, 3), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(ours, reference_toolbox_snn(ann, expected_scales, images, steps, uniform))


def test_percentile_of_all_activations_is_lower_than_of_the_nonzero_ones():
    """The option that the faithful default changed, measured: zeros pull the percentile down."""
    ann = small_ann()
    torch.manual_seed(7)
    calibration = torch.randn(32, 3, 6, 6)
    _, nonzero = convert(ann, [calibration], percentile=99.9, nonzero=True, max_batches=1)
    _, every = convert(ann, [calibration], percentile=99.9, nonzero=False, max_batches=1)
    assert all(every[name] < nonzero[name] for name in nonzero)
    activations = relu_outputs(fold_batch_norm(ann), calibration)
    assert all((a == 0).float().mean() > 0.2 for a in activations.values())  # many zeros to matter
