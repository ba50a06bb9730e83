"""The `direct` method: BN over time and batch, gradients to the first layer, the configured
surrogate inside a full network, option validation, and a diverging run recorded as a failure.
"""

import pytest
import torch
from torch import nn

from bench.api import get_method
from bench.architectures import build_architecture
from bench.config import MethodSpec, load_config
from bench.errors import UserError
from bench.records import read_records, store_path
from bench.runner import run_suite
from methods import direct
from methods.direct import DirectOptions, spiking_network, time_averaged_logits, train_config


def tiny_network(options: DirectOptions, architecture: str = "cifar_vgg_tiny") -> nn.Module:
    torch.manual_seed(0)
    return spiking_network(build_architecture(architecture, 5, width=0.25), options).train()


def test_batch_norm_statistics_cover_time_and_batch_together():
    network = tiny_network(DirectOptions(neuron="if", time_steps_train=4))
    second_bn = [m for m in network.body.modules() if isinstance(m, nn.BatchNorm2d)][1]  # fed by layer-1 spikes
    second_bn.momentum = 1.0  # running stats become exactly this batch's stats
    seen = {}
    second_bn.register_forward_hook(lambda module, inputs, output: seen.setdefault("current", inputs[0].detach()))
    network.reset_state()
    network(torch.randn(6, 3, 32, 32), 4)
    current = seen["current"].unflatten(0, (4, 6))  # [T, B, C, H, W]: spikes from layer 1, new at every step
    per_step_means = current.mean(dim=(1, 3, 4))
    assert (per_step_means[0] - per_step_means[-1]).abs().max() > 1e-3  # per-step stats would differ
    torch.testing.assert_close(second_bn.running_mean, current.mean(dim=(0, 1, 3, 4)))
    torch.testing.assert_close(second_bn.running_var, current.transpose(0, 2).flatten(1).var(dim=1))


def test_gradients_reach_the_first_layer_of_a_resnet():
    network = tiny_network(DirectOptions(time_steps_train=2), "cifar_resnet8")
    logits = time_averaged_logits(network, 2)(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 5)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    first = network.body.conv1.weight.grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0


def analytic_surrogate(shape: str, x: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """The derivatives written out again here, independently of bench.spiking.surrogates."""
    if shape == "arctan":
        return height / (1 + (x / width) ** 2)
    if shape == "triangular":
        return height * torch.clamp(1 - x.abs() / width, min=0)
    if shape == "rectangular":
        return height * (x.abs() < width / 2).float()
    raise AssertionError(shape)


@pytest.mark.parametrize(
    "shape,width,height", [("arctan", 0.7, 1.3), ("triangular", 0.5, 2.0), ("rectangular", 1.5, 0.8)]
)
def test_the_configured_surrogate_is_the_backward_of_every_neuron(shape, width, height):
    options = DirectOptions(
        surrogate=shape, surrogate_width=width, surrogate_height=height, threshold=0.6, time_steps_train=1
    )
    network = tiny_network(options, "cifar_resnet8")
    neurons = network.spiking_layers()
    assert {(n.surrogate.shape, n.surrogate.width, n.surrogate.height) for n in neurons.values()} == {
        (shape, width, height)
    }
    neuron = neurons["body.layer2.0.act1"]  # deep inside: gradient arrives from the rest of the net
    captured = {}

    def keep_input(module, inputs):
        inputs[0].register_hook(lambda grad: captured.__setitem__("input_grad", grad))
        captured["input"] = inputs[0].detach()

    def keep_output(module, inputs, output):
        output.register_hook(lambda grad: captured.__setitem__("output_grad", grad))

    neuron.register_forward_pre_hook(keep_input)
    neuron.register_forward_hook(keep_output)
    logits = time_averaged_logits(network, 1)(torch.randn(4, 3, 32, 32))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    # With T = 1 the potential is the input current, so d spike / d current = g(current - threshold).
    expected = analytic_surrogate(shape, captured["input"] - 0.6, width, height) * captured["output_grad"]
    assert captured["output_grad"].abs().sum() > 0
    torch.testing.assert_close(captured["input_grad"], expected)


def test_options_switch_neuron_and_batch_norm():
    network = tiny_network(DirectOptions(neuron="if", leak=0.5, batch_norm=False, reset="zero", encoder="poisson"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    assert {(n.leak, n.reset_mode) for n in network.spiking_layers().values()} == {(1.0, "zero")}
    assert type(network.encoder).__name__ == "PoissonEncoder"


@pytest.mark.parametrize(
    "values,message",
    [
        ({"surrogate": "nope"}, "unknown surrogate shape 'nope'"),
        ({"surrogate_width": 0}, "positive"),
        ({"leak": 1.5}, "leak"),
        ({"time_steps_train": 0}, "time_steps_train"),
        ({"neuron": "izhikevich"}, "lif, if"),
        ({"lr": -1.0}, "lr"),
        ({"surrogate_widht": 1.0}, "unknown key"),
    ],
)
def test_bad_options_are_refused_before_any_work(values, message):
    with pytest.raises(UserError, match=message):
        get_method("direct").make_options(values, "methods[direct].options")


def test_optimizer_lr_and_epochs_override_the_train_section():
    base = load_config(None, ["train.epochs=7", "train.lr=0.1"]).train
    assert train_config(base, DirectOptions()) == base
    merged = train_config(base, DirectOptions(optimizer="adamw", lr=1e-3, epochs=2))
    assert (merged.optimizer, merged.lr, merged.epochs, merged.momentum) == ("adamw", 1e-3, 2, base.momentum)


def test_a_nan_loss_is_a_recorded_failure_and_the_suite_goes_on(tmp_path, monkeypatch):
    def poisoned(model, time_steps):
        def compute(images):
            model.reset_state()
            return model(images, time_steps).mean(0) * float("nan")

        return compute

    monkeypatch.setattr(direct, "time_averaged_logits", poisoned)
    config = load_config(
        None,
        [
            "data.train_subset=32",
            "data.test_subset=16",
            "data.batch_size=16",
            "model.name=cifar_vgg_tiny",
            "model.width=0.25",
            "train.epochs=1",
            "eval.time_steps=[1,2]",
            f"results_dir={tmp_path / 'results'}",
            f"cache_dir={tmp_path / 'cache'}",
            "device=cpu",
        ],
    )
    config.methods = [MethodSpec("direct", label="direct-T2", options={"time_steps_train": 2}), MethodSpec("ann")]
    run_suite(config)
    records = read_records(store_path(config.results_dir, config.data.name))
    failed = records[records["label"] == "direct-T2"]
    assert list(failed["status"]) == ["failed"]
    assert "surrogate" in failed["error"].iloc[0] and "learning rate" in failed["error"].iloc[0]
    assert set(records.loc[records["label"] == "ann", "status"]) == {"ok"}
    assert "failed" in (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()


def test_recompute_activations_option_gives_the_same_gradients():
    import torch

    from bench.architectures import build_architecture
    from methods.direct import DirectOptions, spiking_network, time_averaged_logits

    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = spiking_network(build_architecture("cifar_vgg_tiny", 4), DirectOptions(recompute_activations=recompute))
        assert model.checkpoint is recompute
        torch.manual_seed(1)
        time_averaged_logits(model, 3)(torch.randn(2, 3, 32, 32)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
