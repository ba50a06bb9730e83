"""The ANN as a dataflow graph: trace it with torch.fx, fold batch norm, and name each node's role.

Conversion needs to know which layer feeds which (a residual block's add has two inputs, a
neuron may feed both a conv and a shortcut), so the ANN is traced once into an
`fx.GraphModule`. The graph module keeps the ANN's submodules under their qualified names
(`layer1.0.act2`), so neuron names in the records are the ANN's own. Tensors are `[B, C, ...]`.

Every node has one role (`node_role`):
    input        the image
    weighted     a conv or linear layer: absorbs any scale on its input, emits any scale asked for
    neuron       an `nn.ReLU`, later an integrate-and-fire neuron
    passthrough  stateless, linear and channel-wise (average pools, flatten, identity, dropout):
                 commutes with a positive scale per channel
    add          the sum of two signals (a residual join)
    output       the logits
Anything else (max pooling, a BatchNorm that follows no conv, other nonlinearities) cannot be
converted to rate-coded neurons and is refused with a `UserError` naming the layer.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from bench.errors import UserError

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# SyncBatchNorm folds like the others (a network trained with train.sync_batch_norm gets its plain
# norms back after training, but one built elsewhere may still have them).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
PASSTHROUGH_MODULES = (
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
PASSTHROUGH_FUNCTIONS = (torch.flatten,)
PASSTHROUGH_METHODS = ("flatten", "contiguous")
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


def trace(model: nn.Module) -> fx.GraphModule:
    """A traced copy of `model` in eval mode; the model itself is left untouched."""
    model = copy.deepcopy(model).eval()
    try:
        graph = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as error:  # fx fails in many ways on data-dependent control flow
        raise UserError(
            f"conversion cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}); "
            f"use an architecture without data-dependent control flow"
        ) from error
    targets = [node.target for node in graph.graph.nodes if node.op == "call_module"]
    shared = sorted({target for target in targets if targets.count(target) > 1})
    if shared:
        # A module called twice would need two different rescalings of the same weights.
        raise UserError(f"conversion needs each layer used once, but {', '.join(shared)} is called more than once")
    return graph


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with a spiking neuron (its time loop) and a module marked `traced_whole`
    (the converter's channel scales) kept as one node each."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        from bench.spiking.neurons import SpikingNeuron

        whole = isinstance(module, SpikingNeuron) or getattr(module, "traced_whole", False)
        return whole or super().is_leaf_module(module, qualified_name)


def fold_batch_norm(model: nn.Module) -> fx.GraphModule:
    """A traced copy of `model` with every BatchNorm folded into the conv or linear before it.

    In eval mode BN is the affine map (x - mean) / sqrt(var + eps) * gamma + beta per output
    channel, so W' = W * gamma / sqrt(var + eps) and b' = (b - mean) * gamma / sqrt(var + eps) + beta
    give the same outputs with one layer fewer.
    """
    graph = trace(model)
    for node in list(graph.graph.nodes):
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), BATCH_NORMS):
            _fold_node(graph, node)
    graph.graph.lint()
    graph.recompile()
    return graph


def _fold_node(graph: fx.GraphModule, bn_node: fx.Node) -> None:
    producer = bn_node.args[0]
    layer = (
        graph.get_submodule(producer.target) if isinstance(producer, fx.Node) and producer.op == "call_module" else None
    )
    if not isinstance(layer, WEIGHTED) or len(producer.users) != 1:
        raise UserError(
            f"BatchNorm {bn_node.target} does not directly follow a conv or linear layer used only by it, "
            f"so it cannot be folded for conversion; use an architecture with conv -> BN -> ReLU ordering"
        )
    bn = graph.get_submodule(bn_node.target)
    if bn.running_mean is None:
        raise UserError(
            f"BatchNorm {bn_node.target} keeps no running statistics (track_running_stats=False); it cannot be folded"
        )
    if isinstance(layer, nn.Linear):
        layer.weight, layer.bias = fuse_linear_bn_weights(
            layer.weight,
            layer.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            _ones_if_none(bn.weight, bn),
            _zeros_if_none(bn.bias, bn),
        )
    else:
        # Threshold-dependent BN scales the normalized value by alpha * threshold before its affine map.
        scale = getattr(bn, "alpha", 1.0) * getattr(bn, "neuron_threshold", 1.0)
        gamma = _ones_if_none(bn.weight, bn) * scale
        layer.weight, layer.bias = fuse_conv_bn_weights(
            layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, gamma, _zeros_if_none(bn.bias, bn)
        )
    bn_node.replace_all_uses_with(producer)
    graph.graph.erase_node(bn_node)
    graph.delete_submodule(bn_node.target)


def _ones_if_none(value: torch.Tensor | None, bn: nn.Module) -> torch.Tensor:
    return torch.ones_like(bn.running_mean) if value is None else value


def _zeros_if_none(value: torch.Tensor | None, bn: nn.Module) -> torch.Tensor:
    return torch.zeros_like(bn.running_mean) if value is None else value


def node_role(graph: fx.GraphModule, node: fx.Node) -> str:
    """The node's role in conversion (see the module docstring), or a `UserError` if it has none."""
    if node.op in ("placeholder", "output"):
        return "input" if node.op == "placeholder" else "output"
    if node.op == "call_module":
        module = graph.get_submodule(node.target)
        if isinstance(module, nn.ReLU):
            return "neuron"
        if isinstance(module, WEIGHTED):
            return "weighted"
        if isinstance(module, PASSTHROUGH_MODULES):
            return "passthrough"
        hint = "; set model.pooling=avg" if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) else ""
        raise UserError(f"conversion does not support {type(module).__name__} at {node.target}{hint}")
    if node.op == "call_function" and node.target in ADD_FUNCTIONS and _adds_two_tensors(node):
        return "add"
    if node.op == "call_function" and node.target in PASSTHROUGH_FUNCTIONS and _keeps_batch_and_channel(node):
        return "passthrough"
    if node.op == "call_method" and node.target in PASSTHROUGH_METHODS and _keeps_batch_and_channel(node):
        return "passthrough"
    if node.op == "call_method" and node.target == "mean" and _averages_space_only(node):
        return "passthrough"
    raise UserError(
        f"conversion does not support the operation {node.op} "
        f"{getattr(node.target, '__name__', node.target)} ({node.name})"
    )


def feeding_layer(graph: fx.GraphModule, target: str) -> nn.Module:
    """The conv or linear layer whose output reaches the module `target` (a neuron, or a ReLU)
    through stateless layers, following the residual branch (the first input) of an add: the
    layer whose bias shifts that neuron's input current."""
    node = next((n for n in graph.graph.nodes if n.op == "call_module" and n.target == target), None)
    if node is None:
        raise ValueError(f"{target} is not a module of the graph")
    source = node.args[0]
    while isinstance(source, fx.Node) and source.op != "placeholder":
        module = graph.get_submodule(source.target) if source.op == "call_module" else None
        if isinstance(module, WEIGHTED):
            return module
        if module is not None and not isinstance(module, PASSTHROUGH_MODULES):
            break
        source = source.args[0]
    raise ValueError(f"no conv or linear layer feeds {target} through stateless layers")


def _adds_two_tensors(node: fx.Node) -> bool:
    return len(node.args) == 2 and all(isinstance(arg, fx.Node) for arg in node.args) and not node.kwargs


def _keeps_batch_and_channel(node: fx.Node) -> bool:
    # flatten(x, 1) keeps the batch; the channel becomes the slowest index of the flat features.
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    return node.target == "contiguous" or start == 1


def _averages_space_only(node: fx.Node) -> bool:
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    dims = (dims,) if isinstance(dims, int) else dims
    return dims is not None and all(isinstance(d, int) and d >= 2 for d in dims)
