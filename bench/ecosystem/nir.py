"""A row's spiking network as a NIR graph (the Neuromorphic Intermediate Representation), and
whether the file is exact: the same input, simulated by the NIR semantics, gives the same spikes.

    graph = export_nir(model, images)              # nir.NIRGraph; nir.write(path, graph) saves it
    verdict = check_nir(model, graph, images, 32)  # exact, or not exact with the reasons and the rate

The body is traced with torch.fx (batch norms folded into the conv before them). Conv2d, Linear
(NIR `Affine`), average pooling, flatten and a residual sum (two edges into one node) map one to
one. A neuron maps to NIR `IF` (no leak) or `LIF` (v <- leak v + I is NIR's Euler step at dt = 1
with tau = 1 / (1 - leak), r = tau; PLIF's v <- v + (I - v) / tau has r = 1), thresholds spread
to one per neuron. What NIR cannot express is kept in the node's metadata (`spikebench`: the
neuron class, its reset, its initial potential, the spike amplitude, that it fires at v >= theta)
and named in the verdict: reset by subtraction (NIR resets to v_reset), a starting potential
other than 0, spikes of amplitude theta, calibration's input shift, a spiking-softmax readout
(the file then ends at the logits).

`check_nir` compares the body as exported (batch norms folded) with the file; with batch norms it
also gives the share of spikes that differ from the body as the harness runs it (unfolded), where
only the fold's rounding can differ. `simulate_nir` is the reference: the NIR spec's dynamics
stepped with forward Euler at dt = 1 (IF: v += r I; LIF: v += (v_leak - v + r I) / tau; a spike
where v > v_threshold, then v = v_reset; v starts at v_reset), the sum of all edges into a node as
its input. Shapes: images `[B, C, H, W]`, sequences `[T, B, ...]`; NIR shapes leave out batch and
time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from bench.conversion.graph import ADD_FUNCTIONS, BATCH_NORMS, fold_batch_norm, trace
from bench.conversion.normalize import ChannelScale
from bench.errors import UserError
from bench.spiking import SpikingNetwork
from bench.spiking.layout import TimeLayout, time_layout
from bench.spiking.neurons import LIFNeuron, ParametricLIFNeuron, SpikingNeuron
from bench.spiking.readout import SpikingSoftmax

SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _nir():
    try:
        import nir
    except ImportError:
        raise UserError('NIR export needs the `nir` package: pip install -e ".[ecosystem]"') from None
    return nir


@dataclass
class Verdict:
    """The outcome of `check_nir`: `reasons` NIR cannot express, and the measured differences."""

    reasons: list[str]
    mismatches: int
    neuron_steps: int
    output_difference: float
    layers: dict[str, float] = field(default_factory=dict)  # mismatch rate per neuron layer
    ties: int = 0  # potentials equal to their threshold in the reference run
    # Spikes of the body as the harness runs it (batch norms unfolded) that differ from the file's:
    # the fold's rounding. None without batch norms.
    unfolded_mismatches: int | None = None

    @property
    def exact(self) -> bool:
        return not self.reasons and self.mismatches == 0 and self.output_difference <= 1e-4

    def __str__(self) -> str:
        rate = f"{self.mismatches / max(self.neuron_steps, 1):.2%} of {self.neuron_steps:,} neuron-steps differ"
        if self.unfolded_mismatches is not None:
            share = self.unfolded_mismatches / max(self.neuron_steps, 1)
            rate += f"; {share:.2%} against the network as the harness runs it, batch norms not folded"
        if self.exact:
            return f"exact ({rate}; outputs within {self.output_difference:.1e})"
        reasons = list(self.reasons)
        if not reasons and self.mismatches and self.ties:
            reasons.append(
                f"a potential equal to its threshold ({self.ties} times; spikebench fires at v >= theta, NIR at "
                "v > theta)"
            )
        elif not reasons and self.mismatches:
            reasons.append("spikes differ with no reason NIR names (a rounding of the dynamics that differs)")
        if not reasons:
            reasons.append(f"outputs differ by {self.output_difference:.2g}")
        return f"not exact: {'; '.join(reasons)} ({rate})"


def export_nir(model: SpikingNetwork, images: torch.Tensor):
    """The NIR graph of `model`'s spiking body; `images` `[B, C, H, W]` give the shapes."""
    nir = _nir()
    if not isinstance(model, SpikingNetwork):
        raise UserError(f"NIR export needs a SpikingNetwork (a spiking body), not a {type(model).__name__}")
    body = fold_batch_norm(model.body)
    shapes = _shapes(body, model.encoder(images[:1], 1)[0])
    nodes, edges, sources, readout = {}, [], {}, None
    for node in body.graph.nodes:
        if node.op == "placeholder":
            nodes["input"] = nir.Input(input_type=np.array(shapes[node.name][1:]))
            sources[node.name] = ["input"]
            continue
        if node.op == "output":
            nodes["output"] = nir.Output(output_type=np.array(shapes[node.args[0].name][1:]))
            edges += [(source, "output") for source in sources[node.args[0].name]]
            continue
        incoming = [source for argument in node.all_input_nodes for source in sources[argument.name]]
        if node.op == "call_function" and node.target in ADD_FUNCTIONS:
            sources[node.name] = incoming  # a sum: every source feeds the next node
            continue
        module = body.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, SpikingSoftmax):
            readout = "spiking-softmax readout (stochastic; the file ends at the logits)"
        if isinstance(module, (*SKIPPED, SpikingSoftmax)):
            sources[node.name] = incoming
            continue
        name = node.name
        nodes[name] = _nir_node(nir, node, module, shapes)
        edges += [(source, name) for source in incoming]
        sources[node.name] = [name]
    metadata = {"spikebench_encoder": type(model.encoder).__name__}
    if readout:
        metadata["spikebench_readout"] = readout
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _shapes(body: fx.GraphModule, sample: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The output shape of every node of `body` for one sample, one step."""
    shapes: dict[str, tuple[int, ...]] = {}
    interpreter = _Recorder(body, shapes)
    with torch.no_grad(), time_layout(TimeLayout(1, None, False, False)):
        interpreter.run(sample)
    for module in body.modules():
        if isinstance(module, SpikingNeuron):
            module.reset_state()
    return shapes


class _Recorder(fx.Interpreter):
    def __init__(self, module, shapes) -> None:
        super().__init__(module)
        self.shapes = shapes

    def run_node(self, node):
        result = super().run_node(node)
        if isinstance(result, torch.Tensor):
            self.shapes[node.name] = tuple(result.shape)
        return result


def _nir_node(nir, node: fx.Node, module: nn.Module | None, shapes):
    shape_in = shapes[node.all_input_nodes[0].name] if node.all_input_nodes else None
    if isinstance(module, nn.Conv2d):
        return nir.Conv2d(
            input_shape=tuple(shape_in[2:]),
            weight=_array(module.weight),
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=_array(module.bias) if module.bias is not None else np.zeros(module.out_channels, np.float32),
        )
    if isinstance(module, nn.Linear):
        bias = _array(module.bias) if module.bias is not None else np.zeros(module.out_features, np.float32)
        return nir.Affine(weight=_array(module.weight), bias=bias)
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _average_pool(nir, node, module, shape_in, shapes[node.name])
    if isinstance(module, ChannelScale):
        shape = shapes[node.name][1:]
        return nir.Scale(scale=_per_neuron(module.factor, shape))
    flatten = _flatten_dims(node, module)
    if flatten is not None:
        start, end = flatten
        return nir.Flatten(input_type={"input": np.array(shape_in[1:])}, start_dim=start - 1, end_dim=end)
    if isinstance(module, SpikingNeuron):
        return _neuron(nir, node, module, shapes[node.name][1:])
    what = f"{type(module).__name__} ({node.target})" if module is not None else f"{node.op} {node.target}"
    raise UserError(
        f"NIR export cannot express {what}; it exports conv, linear, average pooling, flatten, residual sums "
        "and spiking neurons"
    )


def _average_pool(nir, node, module, shape_in, shape_out):
    if isinstance(module, nn.AdaptiveAvgPool2d):
        height, width = shape_in[2:]
        out_height, out_width = shape_out[2:]
        if height % out_height or width % out_width:
            raise UserError(f"NIR export: adaptive pooling {node.target} does not divide its input evenly")
        kernel = stride = (height // out_height, width // out_width)
        padding = (0, 0)
    else:
        if module.ceil_mode or (module.padding and not module.count_include_pad):
            raise UserError(f"NIR export: pooling {node.target} with ceil_mode or padding excluded from the count")
        kernel, stride, padding = (
            _pair(v) for v in (module.kernel_size, module.stride or module.kernel_size, module.padding)
        )
    return nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))


def _flatten_dims(node: fx.Node, module) -> tuple[int, int] | None:
    """(start, end) of a flatten node, in the shapes with the batch; None for another node."""
    if isinstance(module, nn.Flatten):
        return module.start_dim, module.end_dim
    if node.op == "call_function" and node.target is torch.flatten:
        return (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)), -1
    if node.op == "call_method" and node.target == "flatten":
        return (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)), -1
    return None


def _neuron(nir, node: fx.Node, neuron: SpikingNeuron, shape: tuple[int, ...]):
    """NIR IF or LIF for a neuron layer; what NIR cannot say goes into its metadata (`departures`)."""
    threshold = _per_neuron(neuron.threshold, shape)
    zeros = np.zeros(shape, np.float32)
    departures = _departures(neuron)
    metadata = {
        "spikebench_neuron": type(neuron).__name__,
        "spikebench_fires_at": "v >= threshold",
        "spikebench_departures": "; ".join(departures) or "none",
    }
    leak = getattr(neuron, "leak", 1.0)
    if isinstance(neuron, ParametricLIFNeuron):
        tau = 1.0 / float(torch.sigmoid(neuron.leak_weight.detach()))
        return nir.LIF(
            tau=np.full(shape, tau, np.float32),
            r=np.ones(shape, np.float32),
            v_leak=zeros,
            v_threshold=threshold,
            v_reset=zeros,
            metadata=metadata,
        )
    if leak == 1.0:
        return nir.IF(r=np.ones(shape, np.float32), v_threshold=threshold, v_reset=zeros, metadata=metadata)
    tau = 1.0 / (1.0 - leak)
    return nir.LIF(
        tau=np.full(shape, tau, np.float32),
        r=np.full(shape, tau, np.float32),
        v_leak=zeros,
        v_threshold=threshold,
        v_reset=zeros,
        metadata=metadata,
    )


def _departures(neuron: SpikingNeuron) -> list[str]:
    """What this neuron does that NIR's IF/LIF do not."""
    found = []
    known = LIFNeuron if not isinstance(neuron, ParametricLIFNeuron) else ParametricLIFNeuron
    changed = [
        name
        for name in ("step", "integrate", "fresh_potential")
        if getattr(type(neuron), name) is not getattr(known, name, None)
    ]
    if not isinstance(neuron, LIFNeuron) or changed:
        found.append(f"{type(neuron).__name__} has dynamics of its own ({', '.join(changed) or 'its class'})")
    if getattr(neuron, "reset_mode", "zero") == "subtract":
        found.append("subtract reset")
    if neuron.initial_potential:
        found.append(f"v0 = {neuron.initial_potential:g} theta")
    if neuron.spike_amplitude != "one":
        found.append("spikes of amplitude theta")
    return found


def _per_neuron(values: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """One value, or one per channel, spread to one per neuron of `shape` `[C, ...]`."""
    value = values.detach().float().cpu()
    if value.ndim == 1 and len(shape) > 1:  # one per channel
        value = value.view(-1, *([1] * (len(shape) - 1)))
    return np.ascontiguousarray(value.expand(shape).numpy(), dtype=np.float32)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy().copy()


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# --- the reference simulation and the verdict ---------------------------------------------------


@dataclass
class NirRun:
    """What `simulate_nir` gives: outputs `[T, B, ...]`, each neuron node's spikes `[T, B, ...]`, and
    how often a potential equalled its threshold exactly (where v >= theta and v > theta differ)."""

    outputs: torch.Tensor
    spikes: dict[str, torch.Tensor]
    ties: int = 0


def simulate_nir(graph, inputs: torch.Tensor) -> NirRun:
    """`graph` on `inputs` `[T, B, ...]` under NIR's dynamics (see the module docstring)."""
    nir = _nir()
    order = _topological(graph)
    feeds = {name: [source for source, target in graph.edges if target == name] for name in order}
    state: dict[str, Any] = {"ties": 0}
    spikes = {name: [] for name in order if isinstance(graph.nodes[name], (nir.IF, nir.LIF))}
    outputs = []
    for step_input in inputs:
        values: dict[str, torch.Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                values[name] = step_input
                continue
            current = sum(values[source] for source in feeds[name])
            values[name] = _step(nir, name, node, current, state)
            if name in spikes:
                spikes[name].append(values[name])
            if isinstance(node, nir.Output):
                outputs.append(values[name])
    return NirRun(torch.stack(outputs), {name: torch.stack(steps) for name, steps in spikes.items()}, state["ties"])


def _step(nir, name: str, node, current: torch.Tensor, state: dict) -> torch.Tensor:
    """One node at one step; `state` holds the neurons' potentials (by node name) and the tie count."""
    if isinstance(node, nir.Output):
        return current
    if isinstance(node, nir.Conv2d):
        return F.conv2d(
            current,
            _tensor(node.weight),
            _tensor(node.bias),
            tuple(int(v) for v in node.stride),
            tuple(int(v) for v in node.padding),
            tuple(int(v) for v in node.dilation),
            int(node.groups),
        )
    if isinstance(node, nir.Affine):
        return F.linear(current, _tensor(node.weight), _tensor(node.bias))
    if isinstance(node, nir.Linear):
        return F.linear(current, _tensor(node.weight))
    if isinstance(node, nir.AvgPool2d):
        kernel, stride, padding = (
            tuple(int(v) for v in np.atleast_1d(a)) for a in (node.kernel_size, node.stride, node.padding)
        )
        return F.avg_pool2d(current, kernel, stride, padding)
    if isinstance(node, nir.Scale):
        return current * _tensor(node.scale)
    if isinstance(node, nir.Flatten):
        end = int(node.end_dim)
        return current.flatten(int(node.start_dim) + 1, end + 1 if end >= 0 else end)
    if isinstance(node, (nir.IF, nir.LIF)):
        reset, threshold = _tensor(node.v_reset), _tensor(node.v_threshold)
        potential = state.get(name, reset.expand_as(current))
        if isinstance(node, nir.IF):
            potential = potential + _tensor(node.r) * current
        else:
            # v + (v_leak - v + r I) / tau, as decay * v + gain * I + v_leak / tau: the same Euler step,
            # in the order of operations of a leaky neuron's v <- leak v + I, so that rounding agrees too.
            tau = np.asarray(node.tau, dtype=np.float64)
            decay = 1.0 - 1.0 / tau
            drive = _tensor(np.asarray(node.r) / tau) * current + _tensor(np.asarray(node.v_leak) / tau)
            uniform = decay.size and np.all(decay == decay.flat[0])
            potential = (
                torch.add(drive, potential, alpha=float(decay.flat[0]))
                if uniform
                else drive + _tensor(decay) * potential
            )
        state["ties"] += int((potential == threshold).sum())
        fired = potential > threshold
        state[name] = torch.where(fired, reset, potential)
        return fired.to(current.dtype)
    raise UserError(f"the NIR reference simulation has no {type(node).__name__} node ({name})")


def _ints(array) -> tuple[int, ...]:
    return tuple(int(value) for value in np.atleast_1d(array))


def _tensor(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)


def _topological(graph) -> list[str]:
    remaining = {name: {s for s, t in graph.edges if t == name} for name in graph.nodes}
    order = []
    while remaining:
        ready = sorted(name for name, feeds in remaining.items() if not feeds - set(order))
        if not ready:
            raise UserError("the NIR graph has a cycle; the reference simulation runs feed-forward graphs only")
        order += ready
        for name in ready:
            del remaining[name]
    return order


def check_nir(model: SpikingNetwork, graph, images: torch.Tensor, time_steps: int) -> Verdict:
    """Run `model`'s body as exported (batch norms folded) and the NIR reference on the same encoded
    input for `time_steps` steps and compare every neuron layer's spikes and the outputs; with batch
    norms, the body as the harness runs it (unfolded) is compared too (`Verdict.unfolded_mismatches`)."""
    nir = _nir()
    with torch.no_grad():
        inputs = model.encoder(images, time_steps)
    spikes, outputs = _spikebench_run(fold_batch_norm(model.body), inputs)
    reference = simulate_nir(graph, inputs)
    reasons = sorted(
        {
            departure
            for node in graph.nodes.values()
            if isinstance(node, (nir.IF, nir.LIF))
            for departure in str(node.metadata.get("spikebench_departures", "none")).split("; ")
            if departure != "none"
        }
    )
    if "spikebench_readout" in graph.metadata:
        reasons.append(str(graph.metadata["spikebench_readout"]))
    layers, mismatches, neuron_steps = {}, 0, 0
    for name, own in spikes.items():
        differ = int((own != reference.spikes[name]).sum())
        layers[name] = differ / own.numel()
        mismatches += differ
        neuron_steps += own.numel()
    difference = float((outputs - reference.outputs).abs().max()) / max(float(outputs.abs().max()), 1.0)
    unfolded = None
    if any(isinstance(module, BATCH_NORMS) for module in model.body.modules()):
        as_run, _ = _spikebench_run(trace(model.body), inputs)
        unfolded = sum(int((own != reference.spikes[name]).sum()) for name, own in as_run.items())
    return Verdict(reasons, mismatches, neuron_steps, difference, layers, reference.ties, unfolded)


def _spikebench_run(body: fx.GraphModule, inputs: torch.Tensor):
    """(every neuron layer's spikes by fx node name, the body's outputs `[T, B, ...]` before any
    spiking readout) of `body` on the encoded `inputs` `[T, B, ...]`, from a fresh state."""
    time_steps = inputs.shape[0]
    recorded, handles = {}, []
    for node in body.graph.nodes:
        if node.op != "call_module":
            continue
        module = body.get_submodule(node.target)
        if isinstance(module, SpikingSoftmax):
            handles.append(module.register_forward_pre_hook(_keep_input(recorded, "__logits__", time_steps)))
        elif isinstance(module, SpikingNeuron):
            module.reset_state()
            handles.append(module.register_spike_hook(_keep_spikes(recorded, node.name)))
    try:
        with torch.no_grad(), time_layout(TimeLayout(time_steps, None, False, True)):
            outputs = body(inputs.flatten(0, 1)).unflatten(0, (time_steps, -1))
    finally:
        for handle in handles:
            handle.remove()
    logits = recorded.pop("__logits__", outputs)
    return recorded, logits


def _keep_spikes(recorded: dict, name: str):
    def keep(neuron, spikes: torch.Tensor) -> None:
        recorded[name] = spikes.clone()

    return keep


def _keep_input(recorded: dict, name: str, time_steps: int):
    def keep(module, inputs) -> None:
        recorded[name] = inputs[0].detach().unflatten(0, (time_steps, -1)).clone()

    return keep
