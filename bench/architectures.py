"""Architectures by name: plain ANNs that spiking methods later turn into SNNs.

Every network maps an image batch [B, C, H, W] to logits [B, num_classes]. Spiking methods swap
each `nn.ReLU` module for a neuron module and fold BatchNorm into the preceding conv or linear, so
every architecture obeys three rules: each activation is its own non-inplace `nn.ReLU` module,
a residual block applies its last ReLU after the addition, and global pooling is an average.

    @register_architecture
    def my_net(num_classes, **options): ...

    build_architecture("cifar_resnet20", num_classes=10)   # -> nn.Module
    list_architectures("cifar_*")                           # -> sorted names
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from bench.errors import UserError
from bench.registry import Registry

__all__ = ["ARCHITECTURES", "register_architecture", "list_architectures", "build_architecture"]

POOLING_CHOICES = ("avg", "max")

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def register_architecture(name: str | Callable | None = None):
    """Register a builder function under `name` (default: the function's name).

    Works bare (`@register_architecture`) or with a name (`@register_architecture("x")`).
    A builder takes `num_classes` and the keyword options `image_size`, `in_channels`, `width`,
    `pooling`, plus any options of its own, and returns an `nn.Module`.
    """

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        return ARCHITECTURES.add(name if isinstance(name, str) else builder.__name__, builder)

    if callable(name):
        return decorator(name)
    return decorator


def list_architectures(pattern: str = "*") -> list[str]:
    """Registered names matching the fnmatch `pattern` (e.g. "cifar_*"), sorted."""
    return ARCHITECTURES.names(pattern)


def build_architecture(
    name: str,
    num_classes: int,
    *,
    image_size: int = 32,
    in_channels: int = 3,
    width: float = 1.0,
    pooling: str = "avg",
    **kwargs,
) -> nn.Module:
    """Build the architecture `name`: images [B, in_channels, H, W] -> logits [B, num_classes].

    `width` scales channel counts, `pooling` ("avg" or "max") picks the downsampling pool; "avg"
    is the conversion-friendly default. Options given as None are dropped so that the builder's
    defaults apply, as a config file may leave a value empty.
    """
    builder = ARCHITECTURES.get(name)  # an unknown name is refused with the list of known ones
    options = dict(image_size=image_size, in_channels=in_channels, width=width, pooling=pooling)
    options.update(kwargs)
    options = {key: value for key, value in options.items() if value is not None}
    defaults = dict(image_size=32, in_channels=3, width=1.0, pooling="avg")
    options = {**defaults, **options}
    _check_common_options(num_classes, options)
    return builder(num_classes, **options)


def _check_common_options(num_classes: int, options: dict) -> None:
    if options["pooling"] not in POOLING_CHOICES:
        raise UserError(f"pooling must be one of {', '.join(POOLING_CHOICES)}, got {options['pooling']!r}")
    if not options["width"] > 0:
        raise UserError(f"width must be a positive number, got {options['width']!r}")
    for key, value in (
        ("num_classes", num_classes),
        ("image_size", options["image_size"]),
        ("in_channels", options["in_channels"]),
    ):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{key} must be a positive integer, got {value!r}")


def _reject_unknown_options(family: str, unknown: dict, accepted: tuple[str, ...] = ()) -> None:
    # A misspelt config key should fail loudly instead of being silently ignored.
    if unknown:
        allowed = ", ".join(("image_size", "in_channels", "width", "pooling") + accepted)
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))} for {family}; allowed: {allowed}")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _pool_layer(pooling: str, kernel_size: int, stride: int, padding: int = 0) -> nn.Module:
    if pooling == "avg":
        return nn.AvgPool2d(kernel_size, stride, padding)
    return nn.MaxPool2d(kernel_size, stride, padding)


def _global_average_pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2)
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut: [B, C_in, H, W] -> [B, C_out, H/stride, W/stride].

    `act2` runs after the addition, so a spiking neuron put there sees branch + shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = self._make_shortcut(in_channels, out_channels, stride)
        self.act2 = nn.ReLU()

    @staticmethod
    def _make_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
        if stride == 1 and in_channels == out_channels:
            return nn.Identity()
        # A 1x1 projection (option B) rather than zero-padding: it is an ordinary conv + BN,
        # which BN folding and conversion already handle.
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(branch + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, stages of BasicBlocks (16/32/64 x width channels by default), average pool, linear.

    [B, in_channels, H, W] -> [B, num_classes]; every stage after the first halves H and W. There
    is no stem pooling, so the `pooling` option does not apply to this family.
    """

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        base_channels: tuple[int, ...] = (16, 32, 64),
    ):
        super().__init__()
        stage_channels = [_scaled(c, width) for c in base_channels]
        self.conv1 = nn.Conv2d(in_channels, stage_channels[0], 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        self.act1 = nn.ReLU()
        previous = stage_channels[0]
        for stage_index, channels in enumerate(stage_channels):
            stride = 1 if stage_index == 0 else 2
            stage = self._make_stage(previous, channels, blocks_per_stage, stride)
            self.add_module(f"layer{stage_index + 1}", stage)
            previous = channels
        self.num_stages = len(stage_channels)
        self.global_pool = _global_average_pool()
        self.fc = nn.Linear(previous, num_classes)

    @staticmethod
    def _make_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_channels, out_channels, stride)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        for stage_index in range(self.num_stages):
            x = getattr(self, f"layer{stage_index + 1}")(x)
        return self.fc(self.global_pool(x))


def _create_cifar_resnet(
    depth: int, num_classes: int, *, image_size: int, in_channels: int, width: float, pooling: str, **unknown
) -> CifarResNet:
    _reject_unknown_options("cifar_resnet", unknown)
    blocks_per_stage = (depth - 2) // 6
    return CifarResNet(blocks_per_stage, num_classes, in_channels=in_channels, width=width)


@register_architecture
def cifar_resnet18(
    num_classes: int, *, image_size: int, in_channels: int, width: float, pooling: str, **unknown
) -> CifarResNet:
    """ResNet-18 layout (4 stages of 2 BasicBlocks, 17 convs + fc) at 16/32/64/128 x width channels."""
    _reject_unknown_options("cifar_resnet", unknown)
    return CifarResNet(2, num_classes, in_channels=in_channels, width=width, base_channels=(16, 32, 64, 128))


@register_architecture
def cifar_resnet8(num_classes: int, **options) -> CifarResNet:
    """ResNet-8 for CIFAR: 1 BasicBlock per stage."""
    return _create_cifar_resnet(8, num_classes, **options)


@register_architecture
def cifar_resnet14(num_classes: int, **options) -> CifarResNet:
    """ResNet-14 for CIFAR: 2 BasicBlocks per stage."""
    return _create_cifar_resnet(14, num_classes, **options)


@register_architecture
def cifar_resnet20(num_classes: int, **options) -> CifarResNet:
    """ResNet-20 for CIFAR: 3 BasicBlocks per stage."""
    return _create_cifar_resnet(20, num_classes, **options)


@register_architecture
def cifar_resnet32(num_classes: int, **options) -> CifarResNet:
    """ResNet-32 for CIFAR: 5 BasicBlocks per stage."""
    return _create_cifar_resnet(32, num_classes, **options)


@register_architecture
def cifar_resnet56(num_classes: int, **options) -> CifarResNet:
    """ResNet-56 for CIFAR: 9 BasicBlocks per stage."""
    return _create_cifar_resnet(56, num_classes, **options)


# --------------------------------------------------------------------------------------------
# Tiny plain CNN: the fastest net, for tests and default CPU runs
# --------------------------------------------------------------------------------------------


class CifarVGGTiny(nn.Module):
    """Four conv-BN-ReLU layers at 16/32/32/64 x width channels, a 2x2 pool after each of the
    first three, then average pool and linear: [B, in_channels, H, W] -> [B, num_classes].
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, pooling: str = "avg"):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for layer_index, channels in enumerate(_scaled(c, width) for c in (16, 32, 32, 64)):
            layers += [nn.Conv2d(previous, channels, 3, 1, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
            if layer_index < 3:
                layers.append(_pool_layer(pooling, 2, 2))
            previous = channels
        self.features = nn.Sequential(*layers)
        self.global_pool = _global_average_pool()
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(self.features(x)))


@register_architecture
def cifar_vgg_tiny(
    num_classes: int, *, image_size: int, in_channels: int, width: float, pooling: str, **unknown
) -> CifarVGGTiny:
    """Tiny 4-layer plain CNN without residuals (about 2.5M MACs at 32x32)."""
    _reject_unknown_options("cifar_vgg_tiny", unknown)
    return CifarVGGTiny(num_classes, in_channels=in_channels, width=width, pooling=pooling)


# --------------------------------------------------------------------------------------------
# ImageNet ResNets from timm, adapted for spiking
# --------------------------------------------------------------------------------------------

CIFAR_STEM_MAX_IMAGE_SIZE = 64


def _create_timm_resnet(
    variant: str,
    num_classes: int,
    *,
    image_size: int,
    in_channels: int,
    width: float,
    pooling: str,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **unknown,
) -> nn.Module:
    _reject_unknown_options(variant, unknown, accepted=("drop_rate", "drop_path_rate"))
    if width != 1.0:
        # timm's BasicBlock asserts a fixed base width; scaling only some layers would make a
        # net that matches no paper, so refuse instead.
        raise UserError(f"width multiplier not supported for timm resnets ({variant}); use width=1")
    # Imported here so that the CIFAR nets, tests and the command line do not pay timm's import.
    import timm

    model = timm.create_model(
        variant,
        pretrained=False,
        num_classes=num_classes,
        in_chans=in_channels,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
    )
    _adapt_timm_stem(model, image_size, in_channels, pooling)
    _replace_relus(model)
    if model.global_pool.pool_type != "avg":
        raise AssertionError(f"timm {variant} global pool is {model.global_pool.pool_type}, expected avg")
    return model


def _adapt_timm_stem(model: nn.Module, image_size: int, in_channels: int, pooling: str) -> None:
    if image_size <= CIFAR_STEM_MAX_IMAGE_SIZE:
        # A 7x7/2 conv and a pool would shrink a 32x32 image to 8x8 before the first block.
        stem_channels = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_channels, stem_channels, 3, 1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif pooling == "avg":
        model.maxpool = nn.AvgPool2d(3, 2, 1)


def _replace_relus(model: nn.Module) -> None:
    # timm builds `act_layer(inplace=True)`; an in-place ReLU cannot be swapped for a neuron that
    # keeps its input for autograd, so every ReLU becomes a fresh, non-inplace module.
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, nn.ReLU())


@register_architecture
def resnet18(num_classes: int, **options) -> nn.Module:
    """ResNet-18 from timm (BasicBlocks 2-2-2-2), CIFAR stem for images up to 64 px."""
    return _create_timm_resnet("resnet18", num_classes, **options)


@register_architecture
def resnet34(num_classes: int, **options) -> nn.Module:
    """ResNet-34 from timm (BasicBlocks 3-4-6-3), CIFAR stem for images up to 64 px."""
    return _create_timm_resnet("resnet34", num_classes, **options)


@register_architecture
def resnet50(num_classes: int, **options) -> nn.Module:
    """ResNet-50 from timm (Bottlenecks 3-4-6-3), CIFAR stem for images up to 64 px."""
    return _create_timm_resnet("resnet50", num_classes, **options)
