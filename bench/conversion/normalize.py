"""Normalization: a BN-folded ANN graph plus activation scales becomes a spiking body.

Each ReLU `l` with scale lambda_l (a 0-d tensor or one value per channel `[C]`) becomes an
integrate-and-fire neuron whose rate times lambda_l approximates the ReLU's output. Two ways to
get there, which describe the same network and give identical spike trains (up to float rounding,
exactly when the scales are powers of two):

- `threshold` balancing: weights unchanged, neuron threshold lambda_l, and each spike carries the
  amplitude lambda_l (`spike_amplitude="threshold"`), so every signal stays in the ANN's units and
  residual adds need no care.
- `weight` normalization (Diehl 2015, Rueckauer 2017): thresholds 1, binary spikes, and every
  conv or linear layer rescaled by the scales before and after it, W' = W * lambda_in / lambda_out,
  b' = b / lambda_out. Signals are then in units of their scale, which must agree wherever two
  signals meet: both inputs of a residual add are brought to the scale of the neuron after the
  add (the branch's last conv and a projection conv absorb it; an identity shortcut, which has no
  weights, gets a per-channel `ChannelScale` of lambda_before / lambda_after: a diagonal 1x1 conv).
  The final linear layer keeps output scale 1, so the logits are the ANN's.

Tensors are `[N, C, ...]` with N = T * B inside the spiking body.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from bench.conversion.graph import node_role
from bench.spiking import IFNeuron, replace_relus

ONE = torch.tensor(1.0)


class ChannelScale(nn.Module):
    """Multiply `[N, C, ...]` by a fixed factor per channel (or one for all): a diagonal 1x1 conv."""

    traced_whole = True  # one node when a converted body is traced again (NIR export: a `Scale`)

    def __init__(self, factor: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("factor", factor.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _per_channel(self.factor, x.shape[1], x.ndim)


def threshold_balance(graph: fx.GraphModule, scales: dict[str, torch.Tensor], **neuron_options) -> fx.GraphModule:
    """A spiking copy of `graph`: each ReLU a neuron with threshold and spike amplitude its scale."""
    body = copy.deepcopy(graph)
    _check_supported(body)
    replace_relus(body, lambda name: IFNeuron(scales[name], spike_amplitude="threshold", **neuron_options))
    return body


def weight_normalize(graph: fx.GraphModule, scales: dict[str, torch.Tensor], **neuron_options) -> fx.GraphModule:
    """A spiking copy of `graph` with thresholds 1 and each layer's weights rescaled."""
    body = copy.deepcopy(graph)
    roles = _check_supported(body)
    required = _required_scales(body, roles, scales)
    actual = _rescale_layers(body, roles, scales, required)
    _insert_scales(body, roles, scales, actual)
    replace_relus(body, lambda name: IFNeuron(1.0, **neuron_options))
    body.graph.lint()
    body.recompile()
    return body


def _check_supported(body: fx.GraphModule) -> dict[fx.Node, str]:
    return {node: node_role(body, node) for node in body.graph.nodes}


def _required_scales(body, roles, scales) -> dict[fx.Node, torch.Tensor]:
    """The scale each node's consumers need its output in, where they need one (backward pass)."""
    required: dict[fx.Node, torch.Tensor] = {}
    for node in reversed(list(body.graph.nodes)):
        needs = [_need_of(user, roles[user], scales, required) for user in node.users]
        needs = [need for need in needs if need is not None]
        if needs:
            required[node] = needs[0]  # consumers that disagree get a `ChannelScale` later
    return required


def _need_of(user: fx.Node, role: str, scales, required) -> torch.Tensor | None:
    """A neuron needs its input at its own scale and the logits are needed at scale 1; an add or a
    passthrough layer passes its own need on to its inputs; a conv or linear layer absorbs any."""
    if role == "neuron":
        return scales[user.target]
    if role == "output":
        return ONE
    if role in ("add", "passthrough"):
        return required.get(user)
    return None


def _rescale_layers(body, roles, scales, required) -> dict[fx.Node, torch.Tensor]:
    """The scale of every node's output (forward pass), rescaling conv and linear weights on the way."""
    actual: dict[fx.Node, torch.Tensor] = {}
    for node in body.graph.nodes:
        role = roles[node]
        if role == "input":
            actual[node] = ONE
        elif role == "neuron":
            actual[node] = scales[node.target]
        elif role == "weighted":
            actual[node] = required.get(node, ONE)
            _rescale(body.get_submodule(node.target), actual[node.args[0]], actual[node])
        elif role == "passthrough":
            actual[node] = actual[node.args[0]]
        elif role == "add":
            actual[node] = required.get(node, actual[node.args[0]])
    return actual


def _insert_scales(body, roles, scales, actual) -> None:
    """Where a signal reaches a neuron, an add or the output at a scale other than the one it needs, rescale it."""
    for node in list(body.graph.nodes):
        role = roles[node]
        if role not in ("neuron", "add", "output"):
            continue
        needed = scales[node.target] if role == "neuron" else actual[node] if role == "add" else ONE
        for source in list(node.all_input_nodes):
            if _same(actual[source], needed):
                continue
            name = f"scale_{source.name}_to_{node.name}"
            body.add_submodule(name, ChannelScale(actual[source] / needed))
            with body.graph.inserting_before(node):
                scaled = body.graph.call_module(name, (source,))
            node.replace_input_with(source, scaled)


def _rescale(layer: nn.Module, input_scale: torch.Tensor, output_scale: torch.Tensor) -> None:
    """W' = W * input_scale (per input channel) / output_scale (per output channel), b' = b / output_scale."""
    weight = layer.weight.detach()
    input_scale, output_scale = input_scale.to(weight), output_scale.to(weight)
    trailing = [1] * (weight.ndim - 2)
    if input_scale.ndim:
        # Weight is [C_out, C_in / groups, ...]; group g reads input channels g * C_in / groups onwards.
        groups = getattr(layer, "groups", 1)
        per_input = _expand(input_scale, weight.shape[1] * groups).view(groups, 1, -1, *trailing)
        weight = (weight.unflatten(0, (groups, -1)) * per_input).flatten(0, 1)
    else:
        weight = weight * input_scale
    per_output = output_scale.view(-1, 1, *trailing) if output_scale.ndim else output_scale
    layer.weight = nn.Parameter(weight / per_output)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach() / output_scale)


def _expand(scale: torch.Tensor, features: int) -> torch.Tensor:
    # After flatten(1), channel c of [N, C, H, W] owns features c*H*W ... (c+1)*H*W - 1.
    return scale if scale.numel() == features else scale.repeat_interleave(features // scale.numel())


def _per_channel(scale: torch.Tensor, channels: int, ndim: int) -> torch.Tensor:
    """`scale` shaped to broadcast over dimension 1 of an `ndim`-dimensional tensor."""
    if scale.ndim == 0:
        return scale
    return _expand(scale, channels).view(1, -1, *([1] * (ndim - 2)))


def _same(first: torch.Tensor, second: torch.Tensor) -> bool:
    return first is second or (first.shape == second.shape and torch.equal(first, second))
