"""Operation counters: exact fan-out with padding and stride, hand-counted MACs, energy."""

import itertools

import pytest
import torch
from torch import nn

from bench.architectures import build_architecture
from bench.efficiency import OperationCounter, conv_fan_out, energy_microjoules, sum_over_batch
from bench.harness import evaluate
from bench.spiking import AnalogModel, DirectEncoder, IFNeuron, LIFNeuron, PoissonEncoder, SpikingNetwork, replace_relus

CPU = torch.device("cpu")


def brute_force_sops(conv: nn.Conv2d, events: torch.Tensor) -> int:
    """Count every (input event, output) pair the convolution connects, one output at a time."""
    _, channels, height, width = events.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    total = 0
    for i, j, a, b in itertools.product(range(out_h), range(out_w), range(kh), range(kw)):
        row, col = i * sh - ph + a, j * sw - pw + b
        if 0 <= row < height and 0 <= col < width:
            total += int((events[0, :, row, col] != 0).sum())
    return total * conv.out_channels


@pytest.mark.parametrize(
    "kernel,stride,padding,size", [(3, 2, 1, 7), (3, 1, 1, 5), (5, 2, 2, 8), (1, 2, 0, 6), (3, 3, 0, 8)]
)
def test_sops_of_a_strided_padded_conv_equal_a_brute_force_count(kernel, stride, padding, size):
    torch.manual_seed(kernel + stride + size)
    conv = nn.Conv2d(2, 3, kernel, stride=stride, padding=padding)
    events = (torch.rand(1, 2, size, size) < 0.4).float() * torch.randn(1, 2, size, size).sign()
    counter = OperationCounter(nn.Sequential(conv))
    counter.start_call(time_steps=1, batch_size=1)
    conv(events)
    assert counter.counts["0"].kind == "sop"
    assert counter.counts["0"].per_step.item() == brute_force_sops(conv, events)


def test_fan_out_map_by_hand():
    # 3x3 kernel, stride 2, padding 1 on 4x4: outputs at rows/cols {0, 1} cover input rows {0,1} and {1,2,3}.
    cover = conv_fan_out(nn.Conv2d(1, 1, 3, stride=2, padding=1), 4, 4)
    per_axis = torch.tensor([1.0, 2.0, 1.0, 1.0])
    torch.testing.assert_close(cover, per_axis[:, None] * per_axis[None, :])


def test_macs_of_a_known_architecture_equal_a_hand_count():
    network = build_architecture("cifar_resnet8", 10).eval()
    # stem 3->16 at 32x32; stage 1: two 16->16; stage 2: 16->32 s2, 32->32, 1x1 projection; stage 3 alike; fc.
    hand = (
        32 * 32 * 16 * 27
        + 2 * 32 * 32 * 16 * 144
        + 16 * 16 * 32 * 144
        + 16 * 16 * 32 * 288
        + 16 * 16 * 32 * 16
        + 8 * 8 * 64 * 288
        + 8 * 8 * 64 * 576
        + 8 * 8 * 64 * 32
        + 64 * 10
    )
    evaluation = evaluate(
        AnalogModel(network), [(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))], [1, 8], CPU
    )
    assert evaluation.dense_macs_per_sample == hand == 12_501_632
    assert evaluation.macs == {1: hand, 8: hand}  # an ANN computes once, whatever T
    assert evaluation.sops == {1: 0.0, 8: 0.0}


def spiking_pair(encoder) -> SpikingNetwork:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), IFNeuron(threshold=0.5), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    return SpikingNetwork(body, encoder).eval()


def test_direct_input_layer_counts_macs_and_spiking_layers_count_sops():
    model = spiking_pair(DirectEncoder())
    images = torch.randn(4, 1, 4, 4)
    spikes = {}
    hook = model.body[1].register_forward_hook(lambda m, i, o: spikes.__setitem__("out", o.detach()))
    with torch.no_grad():
        model(images, 5)
    hook.remove()
    model.reset_state()
    evaluation = evaluate(model, [(images, torch.zeros(4, dtype=torch.long))], [5], CPU, chunk_size=2)
    first_layer_macs = 4 * 4 * 2 * 9
    assert evaluation.macs[5] == 5 * first_layer_macs
    assert evaluation.sops[5] == (spikes["out"] != 0).sum().item() * 3 / 4  # each spike reaches 3 outputs
    assert evaluation.dense_macs_per_sample == first_layer_macs + 32 * 3


def test_poisson_input_layer_counts_events():
    model = spiking_pair(PoissonEncoder(seed=0))
    evaluation = evaluate(model, [(torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))], [3], CPU)
    assert evaluation.macs[3] == 0.0 and evaluation.sops[3] > 0


def test_energy_convention():
    assert energy_microjoules(1e6, 0) == pytest.approx(4.6)
    assert energy_microjoules(0, 1e6) == pytest.approx(0.9)
    assert energy_microjoules(1e6, 1e6, pj_per_mac=1.0, pj_per_ac=0.5) == pytest.approx(1.5)


def test_sops_from_recorded_spike_maps_equal_a_fresh_count_of_every_input(monkeypatch):
    torch.manual_seed(3)
    body = build_architecture("cifar_resnet8", 10)
    replace_relus(body, lambda name: LIFNeuron(threshold=0.5, leak=0.9))
    model = SpikingNetwork(body, DirectEncoder()).eval().to(memory_format=torch.channels_last)
    loader = [
        (torch.randn(3, 3, 16, 16).contiguous(memory_format=torch.channels_last), torch.zeros(3, dtype=torch.long))
    ]
    used = []
    recorded = OperationCounter._recorded_spikes

    def watched(self, source):
        used.append(recorded(self, source))
        return used[-1]

    monkeypatch.setattr(OperationCounter, "_recorded_spikes", watched)
    from_maps = evaluate(model, loader, [1, 3, 5], CPU, chunk_size=2)
    # Per call: the 8 convolutions fed by neurons read maps; the classifier, fed by pooling, counts afresh.
    assert sum(found is not None for found in used) == 8 * sum(found is None for found in used) > 0
    monkeypatch.setattr(OperationCounter, "_recorded_spikes", lambda self, source: None)
    counted_again = evaluate(model, loader, [1, 3, 5], CPU, chunk_size=2)
    assert from_maps.sops == counted_again.sops and from_maps.sops[5] > from_maps.sops[1] > 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_sum_over_batch_equals_a_plain_sum(channels_last):
    spikes = (torch.rand(6, 5, 4, 3, 3) < 0.3).float()  # [T, B, C, H, W]
    sequence = torch.empty(6, 5, 3, 3, 4).permute(0, 1, 4, 2, 3) if channels_last else torch.empty(6, 5, 4, 3, 3)
    sequence.copy_(spikes)
    assert torch.equal(sum_over_batch(sequence), spikes.sum(1))
    assert torch.equal(sum_over_batch(spikes.transpose(0, 1)), spikes.transpose(0, 1).sum(1))  # not one block per step
