"""The direct-training methods against independent re-implementations of their reference code.

Neurons and losses written from the papers' equations and the reference code's behaviour (named
in each docstring), with explicit time loops, sharing no code with `bench` or `methods`: TET
(Gus-Lab/temporal_efficient_training) and PLIF (fangwei123456/Parametric-Leaky-Integrate-and-
Fire-Spiking-Neuron). Same spikes and same gradients on random currents `[T, B, N]`.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from methods.direct import make_neuron
from methods.plif import PLIFOptions
from methods.tet import TETOptions, tet_loss


class _ZIF(torch.autograd.Function):
    """TET `models/layers.py` ZIF: fires where x > 0; backward (1/gamma)^2 * max(0, gamma - |x|), gamma = 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1.0 - x.abs()).clamp(min=0)


def reference_tet_neuron(current: torch.Tensor) -> torch.Tensor:
    """TET `LIFSpike.forward`: mem = 0.5 mem + x; spike = ZIF(mem - 1); mem = mem * (1 - spike), the
    reset kept in the graph."""
    mem = torch.zeros_like(current[0])
    spikes = []
    for x in current:
        mem = mem * 0.5 + x
        spike = _ZIF.apply(mem - 1.0)
        mem = (1 - spike) * mem
        spikes.append(spike)
    return torch.stack(spikes)


class _ATan(torch.autograd.Function):
    """SpikingJelly `surrogate.ATan(alpha=2)`: heaviside(x >= 0); backward alpha/2 / (1 + (pi/2 alpha x)^2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        alpha = 2.0
        return grad * (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def reference_plif_neuron(current: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """PLIF `codes/models.py` PLIFNode: v += (x - v) * sigmoid(w); spike = ATan(v - 1); v = v * (1 -
    spike) with the spike detached in the reset (v_reset = 0)."""
    v = torch.zeros_like(current[0])
    spikes = []
    for x in current:
        v = v + (x - v) * torch.sigmoid(w)
        spike = _ATan.apply(v - 1.0)
        v = v * (1 - spike.detach())
        spikes.append(spike)
    return torch.stack(spikes)


def random_currents(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return (torch.randn(8, 16, 64) * 1.2 + 0.6).requires_grad_()


def test_tet_neuron_spikes_and_gradients_equal_the_reference_lifspike():
    current = random_currents(0)
    neuron = make_neuron(TETOptions())
    ours = neuron.run_sequence(current)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    ours_grad, current.grad = current.grad.clone(), None
    expected = reference_tet_neuron(current)
    (expected * weights).sum().backward()
    assert torch.equal(ours, expected) and ours.sum() > 100  # many spikes, and the same ones
    assert torch.allclose(ours_grad, current.grad, atol=1e-6)


def test_tet_with_direct_s_neuron_is_not_the_reference():
    """The test above can fail: the suite's earlier TET neuron (leak 0.9, subtract reset) differs."""
    current = random_currents(0)
    old = make_neuron(TETOptions(leak=0.9, reset="subtract")).run_sequence(current)
    assert not torch.equal(old, reference_tet_neuron(current))


def reference_tet_loss(outputs: torch.Tensor, labels: torch.Tensor, lamb: float) -> torch.Tensor:
    """TET `functions.py` TET_loss: mean over t of CE(O_t, y), then (1 - lamb) of it plus lamb times
    the MSE of all outputs against the constant 1."""
    steps = outputs.size(0)
    loss = sum(F.cross_entropy(outputs[t], labels) for t in range(steps)) / steps
    return (1 - lamb) * loss + lamb * F.mse_loss(outputs, torch.ones_like(outputs))


def test_tet_loss_value_and_gradient_equal_the_reference_at_the_paper_lambda():
    torch.manual_seed(1)
    outputs = torch.randn(4, 6, 10, requires_grad=True)
    labels = torch.randint(0, 10, (6,))
    assert TETOptions().tet_lambda == 0.05  # Deng et al. 2022, Sec. 5.2, for CIFAR
    ours = tet_loss(outputs, labels, TETOptions().tet_lambda)
    (grad_ours,) = torch.autograd.grad(ours, outputs)
    expected = reference_tet_loss(outputs, labels, 0.05)
    (grad_expected,) = torch.autograd.grad(expected, outputs)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(grad_ours, grad_expected, atol=1e-7)


def test_plif_neuron_spikes_and_gradients_equal_the_reference_plifnode():
    current = random_currents(2)
    neuron = make_neuron(PLIFOptions())
    ours = neuron.run_sequence(current)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    w = torch.tensor(-math.log(2.0 - 1.0), requires_grad=True)  # tau = 2
    expected = reference_plif_neuron(current, w)
    ours_input_grad, current.grad = current.grad.clone(), None
    (expected * weights).sum().backward()
    assert torch.equal(ours, expected) and ours.sum() > 100
    assert torch.allclose(ours_input_grad, current.grad, atol=1e-5)
    assert neuron.leak_weight.grad.item() == pytest.approx(w.grad.item(), rel=1e-4)


def test_plif_with_direct_s_neuron_is_not_the_reference():
    """The test above can fail: `direct-plif` (subtract reset, triangular surrogate) differs."""
    current = random_currents(2)
    variant = make_neuron(PLIFOptions(reset="subtract", detach_reset=False, surrogate="triangular", surrogate_width=1))
    assert not torch.equal(variant.run_sequence(current), reference_plif_neuron(current, torch.tensor(0.0)))
