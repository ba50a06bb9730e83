"""Spiking core: neuron traces computed by hand, surrogate derivatives, encoders, state handling."""

import pytest
import torch
from torch import nn

from bench.errors import UserError
from bench.spiking import (
    DirectEncoder,
    IFNeuron,
    LIFNeuron,
    PoissonEncoder,
    SpikingNetwork,
    Surrogate,
    list_surrogates,
    replace_relus,
    spike,
)


def run_neuron(neuron: nn.Module, currents: list[float]) -> list[float]:
    """Feed one neuron a current trace; currents is [T] for a single-neuron batch."""
    sequence = torch.tensor(currents).view(len(currents), 1, 1)
    return neuron.run_sequence(sequence).view(-1).tolist()


def test_if_reset_by_subtraction_matches_hand_trace():
    # v: 0.7; 1.4 -> spike, 0.4; 1.1 -> spike, 0.1; 0.8
    neuron = IFNeuron(threshold=1.0, reset_mode="subtract")
    assert run_neuron(neuron, [0.7, 0.7, 0.7, 0.7]) == [0, 1, 1, 0]
    assert neuron.potential.item() == pytest.approx(0.8)


def test_if_reset_to_zero_matches_hand_trace():
    # v: 0.7; 1.4 -> spike, 0; 0.7; 1.4 -> spike, 0
    neuron = IFNeuron(threshold=1.0, reset_mode="zero")
    assert run_neuron(neuron, [0.7, 0.7, 0.7, 0.7]) == [0, 1, 0, 1]
    assert neuron.potential.item() == 0.0


def test_lif_leak_matches_hand_trace():
    # v: 0.8; 0.5*0.8 + 0.8 = 1.2 -> spike, 0.2; 0.5*0.2 + 0.8 = 0.9
    neuron = LIFNeuron(threshold=1.0, leak=0.5)
    assert run_neuron(neuron, [0.8, 0.8, 0.8]) == [0, 1, 0]
    assert neuron.potential.item() == pytest.approx(0.9)


def test_threshold_and_initial_potential():
    assert run_neuron(IFNeuron(threshold=2.0), [1.0, 0.9, 0.2]) == [0, 0, 1]
    # Starting at half the threshold, 0.5 more reaches it at the first step.
    assert run_neuron(IFNeuron(threshold=1.0, initial_potential=0.5), [0.5, 0.0]) == [1, 0]


def test_per_channel_threshold_and_threshold_amplitude():
    neuron = IFNeuron(threshold=torch.tensor([1.0, 2.0]), spike_amplitude="threshold")
    out = neuron(torch.tensor([[1.5, 1.5]]))  # [T*B=1, C=2]
    assert out.tolist() == [[1.0, 0.0]]
    out = neuron(torch.tensor([[0.0, 1.0]]))  # channel 1 reaches 2.5 -> emits its threshold
    assert out.tolist() == [[0.0, 2.0]]


def test_state_is_carried_across_calls_until_reset():
    whole = IFNeuron()
    expected = run_neuron(whole, [0.4] * 6)
    chunked = IFNeuron()
    assert run_neuron(chunked, [0.4] * 2) + run_neuron(chunked, [0.4] * 4) == expected
    chunked.reset_state()
    assert run_neuron(chunked, [0.4] * 6) == expected


def test_state_of_another_batch_shape_is_refused():
    neuron = IFNeuron()
    neuron(torch.zeros(2, 3))  # outside a network's call: one time step
    with pytest.raises(RuntimeError, match="reset_state"):
        neuron(torch.zeros(4, 3))


@pytest.mark.parametrize(
    "shape,primitive",
    [
        ("sigmoid", lambda x, w, h: 4 * h * w * torch.sigmoid(x / w)),
        ("arctan", lambda x, w, h: h * w * torch.atan(x / w)),
        ("fast_sigmoid", lambda x, w, h: h * x / (1 + x.abs() / w)),
    ],
)
def test_smooth_surrogates_are_derivatives_of_their_primitives(shape, primitive):
    width, height = 0.7, 1.3
    x = torch.linspace(-3, 3, 61, requires_grad=True)
    spike(x, Surrogate(shape, width, height)).sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    primitive(reference, width, height).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)


def test_piecewise_surrogates_match_hand_values():
    x = torch.tensor([-1.5, -0.6, -0.25, 0.0, 0.25, 0.5, 1.0], requires_grad=True)
    spike(x, Surrogate("rectangular", width=1.0, height=2.0)).sum().backward()
    assert x.grad.tolist() == [0, 0, 2, 2, 2, 0, 0]
    x.grad = None
    spike(x, Surrogate("triangular", width=1.0, height=1.0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0, 0.4, 0.75, 1.0, 0.75, 0.5, 0.0]))


def test_surrogates_take_width_and_height_as_tensors_too():
    # The compiled neuron step passes them as 0-dim tensors (one kernel for every width).
    x = torch.linspace(-2, 2, 41)
    for shape in list_surrogates():
        g = Surrogate(shape).function
        torch.testing.assert_close(g(x, torch.tensor(0.8), torch.tensor(1.0)), g(x, 0.8, 1.0), msg=shape)
        torch.testing.assert_close(g(x, torch.tensor(1.2), torch.tensor(0.6)), g(x, 1.2, 0.6), msg=shape)


def test_spike_forward_is_heaviside():
    x = torch.tensor([-0.1, 0.0, 0.2])
    for shape in list_surrogates():
        assert spike(x, Surrogate(shape)).tolist() == [0, 1, 1]


def test_surrogate_registry_refuses_unknown_shapes_and_bad_widths():
    assert {"rectangular", "triangular", "fast_sigmoid", "sigmoid", "arctan"} <= set(list_surrogates())
    with pytest.raises(UserError, match="triangular"):
        Surrogate("nope")
    with pytest.raises(UserError, match="positive"):
        Surrogate("triangular", width=0.0)


def test_poisson_rates_approach_the_image():
    image = torch.tensor([[[[0.9, -0.45, 0.3, 0.0]]]])  # [B=1, C=1, H=1, W=4]
    spikes = PoissonEncoder(seed=1)(image, 4000)
    torch.testing.assert_close(spikes.abs().unique(), torch.tensor([0.0, 0.9]))
    torch.testing.assert_close(spikes.mean(0), image, atol=0.03, rtol=0)
    assert spikes[:, ..., 3].abs().sum() == 0


def test_direct_encoder_repeats_the_image():
    image = torch.randn(2, 3, 4, 4)
    sequence = DirectEncoder()(image, 5)
    assert sequence.shape == (5, 2, 3, 4, 4) and torch.equal(sequence[3], image)


def tiny_snn(seed: int = 0) -> SpikingNetwork:
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )
    assert replace_relus(body, lambda name: IFNeuron(threshold=0.5)) == 1
    return SpikingNetwork(body, DirectEncoder()).eval()


def test_snn_state_never_leaks_between_batches():
    model = tiny_snn()
    first, second = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        model.reset_state()
        fresh = model(second, 6)
        model.reset_state()
        model(first, 6)
        model.reset_state()
        after_other_batch = model(second, 6)
    torch.testing.assert_close(after_other_batch, fresh)


def test_chunked_simulation_equals_one_long_simulation():
    model = tiny_snn()
    images = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        model.reset_state()
        whole = model(images, 10)
        model.reset_state()
        chunks = torch.cat([model(images, 3), model(images, 3), model(images, 4)])
    torch.testing.assert_close(chunks, whole)
    assert whole.shape == (10, 3, 5)


def test_poisson_encoder_resumes_its_draws_and_survives_a_state_of_another_device():
    from bench.spiking import PoissonEncoder

    images = torch.rand(2, 3, 4, 4)
    encoder = PoissonEncoder(seed=3)
    encoder(images, 2)
    saved = encoder.random_state()
    expected = encoder(images, 5)
    encoder.set_random_state(saved)
    assert torch.equal(encoder(images, 5), expected)
    # A CUDA generator's state is 16 bytes, a CPU generator cannot take it: start again from the seed.
    with pytest.warns(UserWarning, match="another kind of device"):
        encoder.set_random_state(torch.zeros(16, dtype=torch.uint8))
    assert torch.equal(encoder(images, 2), PoissonEncoder(seed=3)(images, 2))


def test_the_plain_time_loop_keeps_the_potential_in_float32_under_bfloat16_autocast():
    """1000 steps of 0.0015: in float32 the potential reaches the threshold; summed in bfloat16 it
    stalls where 0.0015 is below half its spacing, and the neuron never fires."""
    from bench.spiking import LIFNeuron

    current = torch.full((1000, 1, 1), 0.0015, dtype=torch.bfloat16)
    expected = LIFNeuron(threshold=1.0, fused=False).run_sequence(current.float()).sum()
    neuron = LIFNeuron(threshold=1.0, fused=False)
    spikes = neuron.run_sequence(current)
    assert expected == 1 and spikes.sum() == expected
    assert spikes.dtype == torch.bfloat16 and neuron.potential.dtype == torch.float32
