"""Tests for bench.architectures: the registry, output shapes [B, C, H, W] -> [B, K], and the
rules spiking methods rely on (distinct non-inplace ReLU modules, last ReLU after the residual
addition, average pooling only).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bench.architectures import BasicBlock, build_architecture, list_architectures, register_architecture
from bench.errors import UserError

NUM_CLASSES = 7
ALL_NAMES = list_architectures()

_MODEL_CACHE: dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    # Several tests inspect the same default build; timm's ResNet-50 is worth building once.
    if name not in _MODEL_CACHE:
        _MODEL_CACHE[name] = build_architecture(name, NUM_CLASSES).eval()
    return _MODEL_CACHE[name]


class _CountReluCalls(TorchFunctionMode):
    """Counts every relu call, functional or through a module."""

    RELU_FUNCTIONS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.RELU_FUNCTIONS:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _relu_modules(model: nn.Module) -> list[nn.ReLU]:
    return [m for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU)]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_maps_images_to_logits(name):
    with torch.no_grad():
        logits = _model(name)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_relus_are_distinct_modules_called_once_each(name):
    model = _model(name)
    relus = _relu_modules(model)
    assert relus, "no nn.ReLU modules"
    assert not any(relu.inplace for relu in relus)
    assert len({id(relu) for relu in relus}) == len(relus), "a ReLU module is shared"
    module_calls = []
    hooks = [relu.register_forward_hook(lambda *_: module_calls.append(1)) for relu in relus]
    with torch.no_grad(), _CountReluCalls() as counter:
        model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    # Equal counts mean no functional relu hides outside the modules and no module runs twice.
    assert len(module_calls) == len(relus)
    assert counter.calls == len(relus)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_avg_pooling_has_no_max_pool(name):
    pools = [m for m in _model(name).modules() if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d))]
    assert pools == []


def test_large_image_timm_stem_pools_as_requested():
    avg = build_architecture("resnet18", 5, image_size=96)
    assert isinstance(avg.maxpool, nn.AvgPool2d) and avg.conv1.kernel_size == (7, 7)
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.modules())
    with torch.no_grad():
        assert avg.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 5)
    assert isinstance(build_architecture("resnet18", 5, image_size=96, pooling="max").maxpool, nn.MaxPool2d)


def test_vgg_tiny_max_pooling_option():
    model = build_architecture("cifar_vgg_tiny", 3, pooling="max")
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3


@pytest.mark.parametrize(
    "name, expected_relus",
    [
        ("cifar_resnet20", 1 + 2 * 9),
        ("cifar_resnet18", 1 + 2 * 8),
        ("resnet18", 1 + 2 * 8),
        ("resnet50", 1 + 3 * 16),
        ("cifar_vgg_tiny", 4),
    ],
)
def test_relu_count_by_hand(name, expected_relus):
    assert len(_relu_modules(_model(name))) == expected_relus


def _set_bn_to_identity(bn: nn.BatchNorm2d, bias: float = 0.0) -> None:
    # running_var = 1 - eps makes the eval-mode normalisation exactly the identity.
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.data.fill_(1.0)
    bn.bias.data.fill_(bias)


def test_basic_block_applies_last_relu_after_addition():
    block = BasicBlock(1, 1).eval()
    with torch.no_grad():
        # Only the centre tap is nonzero, so each 3x3 conv acts pointwise.
        for conv, centre in ((block.conv1, 1.0), (block.conv2, 2.0)):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = centre
        _set_bn_to_identity(block.bn1)
        _set_bn_to_identity(block.bn2, bias=-3.0)
        x = torch.tensor([-2.0, -0.5, 0.5, 2.0]).view(1, 1, 1, 4)
        out = block(x)
    branch = 2.0 * F.relu(x) - 3.0
    assert torch.allclose(out, F.relu(branch + x))
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.0, 0.0, 3.0]))


@pytest.mark.parametrize(
    "name, block_path, last_bn, last_act, shortcut",
    [
        ("cifar_resnet8", "layer2.0", "bn2", "act2", "shortcut"),
        ("resnet18", "layer2.0", "bn2", "act2", "downsample"),
        ("resnet50", "layer1.1", "bn3", "act3", "downsample"),
    ],
)
def test_block_last_act_sees_branch_plus_shortcut(name, block_path, last_bn, last_act, shortcut):
    block = _model(name).get_submodule(block_path)
    seen = {}
    handles = [
        block.register_forward_pre_hook(lambda _, inputs: seen.update(block_in=inputs[0])),
        getattr(block, last_bn).register_forward_hook(lambda *args: seen.update(branch=args[2].clone())),
        getattr(block, last_act).register_forward_hook(lambda *args: seen.update(act_in=args[1][0], act_out=args[2])),
        block.register_forward_hook(lambda *args: seen.update(block_out=args[2])),
    ]
    with torch.no_grad():
        _model(name)(torch.randn(1, 3, 32, 32))
        shortcut_module = getattr(block, shortcut) or nn.Identity()
        expected_sum = seen["branch"] + shortcut_module(seen["block_in"])
    for handle in handles:
        handle.remove()
    assert torch.allclose(seen["act_in"], expected_sum, atol=1e-5)
    assert torch.equal(seen["act_out"], seen["block_out"])


def test_list_architectures_wildcards():
    assert list_architectures("cifar_resnet*") == [
        "cifar_resnet14",
        "cifar_resnet18",
        "cifar_resnet20",
        "cifar_resnet32",
        "cifar_resnet56",
        "cifar_resnet8",
    ]
    assert set(list_architectures("cifar_*")) >= {"cifar_resnet8", "cifar_vgg_tiny"}
    assert list_architectures("resnet?8") == ["resnet18"]
    assert list_architectures() == sorted(list_architectures())


def test_unknown_name_lists_registered_names():
    with pytest.raises(UserError, match="cifar_resnet20.*resnet18"):
        build_architecture("resnet9000", 10)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(pooling="median"), "avg, max"),
        (dict(width=0), "width"),
        (dict(width=-1.5), "width"),
        (dict(in_channels=0), "in_channels"),
        (dict(widht=2.0), "widht.*allowed"),
    ],
)
def test_bad_options_raise_user_error(options, message):
    with pytest.raises(UserError, match=message):
        build_architecture("cifar_vgg_tiny", 10, **options)


def test_timm_resnet_rejects_width_multiplier():
    with pytest.raises(UserError, match="width multiplier"):
        build_architecture("resnet18", 10, width=0.5)


def test_none_options_fall_back_to_defaults():
    model = build_architecture("cifar_vgg_tiny", 4, width=None, pooling=None, in_channels=None, image_size=None)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.features[0].in_channels == 3


def test_width_and_in_channels_change_the_net():
    model = build_architecture("cifar_resnet8", 3, width=2.0, in_channels=1).eval()
    assert model.conv1.out_channels == 32 and model.fc.in_features == 128
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_duplicate_registration_raises():
    with pytest.raises(UserError, match="already registered"):

        @register_architecture("cifar_resnet8")
        def another_resnet8(num_classes, **options):
            return nn.Linear(1, num_classes)
