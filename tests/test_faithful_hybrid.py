"""`hybrid` against an independent re-implementation of Rathi et al.'s reference code
(nitin-rathi/hybrid-snn-conversion: `snn.py` `find_threshold`, `self_models/vgg_spiking.py`
`LinearSpike`), written with explicit loops and sharing no code with `bench` or `methods`.

The reference's one-step delay per layer is a stated departure of the method (see its
docstring), so the re-implementation here fires each layer in the step it is fed, as the method
does; everything else is the reference's.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.conversion import convertible_graph
from bench.spiking import DirectEncoder, IFNeuron, SpikingNetwork, replace_relus
from methods.hybrid import UNREACHABLE, HybridOptions, input_max_thresholds, with_training_neurons
from tests.test_faithful_conversion import small_ann


def reference_thresholds(ann: nn.Module, batches: list[torch.Tensor], steps: int, scale: float) -> list[float]:
    """`find_threshold`: layer by layer, a fresh batch each, the network run `steps` steps with the
    layers before at their (unscaled) thresholds, spikes of 1, IF from 0, reset by subtraction; the
    layer's threshold is the largest input current W s(t) it sees, times `scale` at the end."""
    convs = [m for m in ann if isinstance(m, nn.Conv2d)]
    found: list[float] = []
    for layer, images in enumerate(batches):
        membranes = [torch.zeros(1) for _ in range(layer)]
        largest = float("-inf")
        for _ in range(steps):
            x = images
            for index, conv in enumerate(convs[: layer + 1]):
                current = F.conv2d(x, conv.weight, conv.bias, padding=1)
                if index == layer:
                    largest = max(largest, current.max().item())
                    break
                membranes[index] = membranes[index] + current
                spikes = (membranes[index] >= found[index]).float()
                membranes[index] = membranes[index] - spikes * found[index]
                x = spikes
        found.append(largest)
    return [scale * value for value in found]


@torch.no_grad()
def test_hybrid_thresholds_equal_the_reference_find_threshold():
    ann = small_ann(seed=4)
    torch.manual_seed(9)
    batches = [torch.randn(6, 3, 5, 5) * 2 for _ in range(2)]
    body = copy.deepcopy(convertible_graph(ann))
    replace_relus(body, lambda name: IFNeuron(UNREACHABLE))
    model = SpikingNetwork(body, DirectEncoder()).eval()
    assert (HybridOptions().threshold_rule, HybridOptions().encoder) == ("input_max", "poisson")
    scale = HybridOptions().threshold_scale
    found = input_max_thresholds(model, iter(batches), time_steps=23, scale=scale, chunk_steps=5)
    expected = reference_thresholds(ann, batches, 23, 0.7)  # the reference's scaling_factor
    assert [v.item() for v in found.values()] == pytest.approx(expected, rel=1e-6)
    assert [n.threshold.item() for n in model.spiking_layers().values()] == [v.item() for v in found.values()]


class _LinearSpike(torch.autograd.Function):
    """`LinearSpike`: fires where mem / theta - 1 > 0; backward 0.3 * max(0, 1 - |mem / theta - 1|)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 0.3 * (1 - x.abs()).clamp(min=0)


def reference_hybrid_neuron(current: torch.Tensor, theta: float) -> torch.Tensor:
    """The reference's IF neuron in training: integrate, spike on mem / theta - 1 through the linear
    surrogate, subtract theta with the reset out of the gradient (leak 1, from 0)."""
    mem = torch.zeros_like(current[0])
    spikes = []
    for x in current:
        mem = mem + x
        spike = _LinearSpike.apply(mem / theta - 1)
        mem = mem - theta * spike.detach()
        spikes.append(spike)
    return torch.stack(spikes)


def test_hybrid_training_neuron_gradient_equals_the_reference_linear_spike():
    torch.manual_seed(3)
    theta = 1.7
    current = (torch.randn(6, 5, 40) * 1.5 + 0.8).requires_grad_()
    body = nn.Sequential(IFNeuron(theta))
    with_training_neurons(body, HybridOptions())
    ours = body[0].run_sequence(current)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    ours_grad, current.grad = current.grad.clone(), None
    expected = reference_hybrid_neuron(current, theta)
    (expected * weights).sum().backward()
    assert torch.equal(ours, expected) and ours.sum() > 50
    assert torch.allclose(ours_grad, current.grad, atol=1e-6)
