"""Two options of `SpikingNetwork` that change its cost but not its results.

Time-constant prefix. When the input is the same at every step (direct coding), every layer before
the first neuron computes the same thing T times. The network then runs its body on the images
`[B, C, H, W]` themselves: the layers before the first neuron run once on `[B, ...]`, and a neuron
that receives a `[B, ...]` current holds it for all T steps (`TimeLayout.constant_rows`), so all
layers after it run on `[T*B, ...]` as usual. Batch norm in training takes the same mean and
biased variance over B samples as over T copies of them; only the unbiased variance it adds to
`running_var` depends on the count, and `running_var_over_time` corrects it to the T-fold count.
A body could route a tensor from before its first neuron around the neurons (a skip from the stem
to a later layer); the prefix would then be wrong, so `PrefixCheck` compares both ways once per
body structure, on two samples and two steps, and refuses the prefix when they differ.

Activation checkpointing. With `checkpoint_blocks(body)` each block of the body (a residual block,
or a run of layers that ends at a neuron in a Sequential) keeps only its input for the backward
and recomputes the rest, so training memory grows far slower with T, for about one more forward
pass of time. The recomputation starts from the neuron states the block started from and does not
count its batch again in batch-norm running statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from bench.spiking.layout import current_layout, time_layout
from bench.spiking.neurons import SpikingNeuron, Stateful

PROBE_SAMPLES, PROBE_STEPS = 2, 2


class PrefixCheck:
    """Whether the time-constant prefix is exact for this body; probed again when its modules change."""

    def __init__(self) -> None:
        self.signature: tuple[int, ...] = ()
        self.usable = False
        self.norms: list[_BatchNorm] = []  # batch norms that run on the `[B, ...]` prefix

    def usable_for(self, network, images: torch.Tensor) -> bool:
        signature = tuple(map(id, network.body.modules()))
        if signature != self.signature:
            self.usable, self.norms = _probe(network, images)
            self.signature = signature
        return self.usable


@torch.no_grad()
def _probe(network, images: torch.Tensor) -> tuple[bool, list[_BatchNorm]]:
    sample = images[:PROBE_SAMPLES].detach()
    sample = sample.expand(PROBE_SAMPLES, *sample.shape[1:]) if len(sample) < PROBE_SAMPLES else sample
    stateful = [m for m in network.modules() if isinstance(m, Stateful)]
    saved_states = [m.state_snapshot() for m in stateful]
    # Modules that draw random numbers (a stochastic output layer) draw the same in both runs.
    drawing = [m for m in network.modules() if hasattr(m, "random_state")]
    saved_draws = [m.random_state() for m in drawing]
    saved_modes = [(module, module.training) for module in network.modules()]
    norms = [m for m in network.body.modules() if isinstance(m, _BatchNorm)]
    on_prefix: list[_BatchNorm] = []

    def note_prefix_batch(module, args) -> None:
        if args[0].shape[0] == PROBE_SAMPLES:
            on_prefix.append(module)

    stack = contextlib.ExitStack()

    def run(constant_prefix: bool) -> torch.Tensor:
        for module in stateful:
            module.reset_state()
        for module, state in zip(drawing, saved_draws):
            module.set_random_state(state)
        return network.run_body(sample, PROBE_STEPS, constant_prefix=constant_prefix, observed=False)

    try:
        network.eval()
        stack.enter_context(_user_hooks_silenced(network))
        reference = run(constant_prefix=False)
        handles = [norm.register_forward_pre_hook(note_prefix_batch) for norm in norms]
        try:
            fast = run(constant_prefix=True)
        finally:
            for handle in handles:
                handle.remove()
        usable = fast.shape == reference.shape and torch.allclose(fast, reference, rtol=1e-4, atol=1e-5)
    except RuntimeError:  # a prefix tensor met a `[T*B, ...]` one: shapes do not match
        usable = False
    finally:
        stack.close()
        for module, training in saved_modes:
            module.training = training
        for module, state in zip(stateful, saved_states):
            module.restore_state(state)
        for module, state in zip(drawing, saved_draws):
            module.set_random_state(state)
    return usable, on_prefix if usable else []


_FORWARD_HOOKS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


@contextlib.contextmanager
def _user_hooks_silenced(network: nn.Module):
    """The probe is not a forward of the model: hooks that record activations must not see it."""
    saved = [
        (module, name, getattr(module, name))
        for module in network.modules()
        for name in _FORWARD_HOOKS
        if hasattr(module, name)
    ]
    for module, name, hooks in saved:
        setattr(module, name, type(hooks)())
    try:
        yield
    finally:
        for module, name, hooks in saved:
            setattr(module, name, hooks)


@contextlib.contextmanager
def running_var_over_time(norms: list[_BatchNorm], time_steps: int):
    """While a training forward runs the prefix on `[B, ...]`, count each of its samples T times in `running_var`."""
    saved: dict[int, tuple[torch.Tensor, int]] = {}

    def before(module, args) -> None:
        if module.training and module.track_running_stats and module.running_var is not None:
            count = args[0].numel() // args[0].shape[1] * _replicas(module)
            saved[id(module)] = (module.running_var.clone(), count)

    def after(module, args, output) -> None:
        if id(module) not in saved:
            return
        previous, count = saved.pop(id(module))
        momentum = module.momentum if module.momentum is not None else 1.0 / float(module.num_batches_tracked)
        unbiased = (module.running_var - (1 - momentum) * previous) / momentum
        total = count * time_steps
        corrected = unbiased * ((count - 1) / count) * (total / max(total - 1, 1))
        # Through `.data`: batch norm saved running_var for its backward, which in training reads
        # only the batch statistics; a tracked in-place write would be refused there.
        module.running_var.data.copy_((1 - momentum) * previous + momentum * corrected)

    handles = [h for norm in norms for h in (norm.register_forward_pre_hook(before), norm.register_forward_hook(after))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _replicas(module: nn.Module) -> int:
    """SyncBatchNorm counts the samples of every process."""
    if isinstance(module, nn.SyncBatchNorm) and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(module.process_group)
    return 1


def checkpoint_blocks(body: nn.Module, enabled: bool) -> int:
    """Turn activation checkpointing on or off for every block of `body`; return how many blocks."""
    blocks = [(body, True)] if _holds_neurons(body) else _blocks(body)
    for module, segmented in blocks:
        if enabled:
            module.forward = (_CheckpointedSequential if segmented else _CheckpointedForward)(module)
        elif "forward" in module.__dict__:
            del module.forward
    return len(blocks)


def _blocks(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    """(module, segmented): Sequentials that hold neurons are split at them; other modules are whole blocks."""
    found = []
    for child in module.children():
        if isinstance(child, SpikingNeuron) or not any(isinstance(m, SpikingNeuron) for m in child.modules()):
            continue
        if _holds_neurons(child):
            found.append((child, True))
        elif isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            found += _blocks(child)
        else:
            found.append((child, False))
    return found


def _holds_neurons(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and any(isinstance(child, SpikingNeuron) for child in module.children())


class _CheckpointedForward:
    """A module's own forward, run under `torch.utils.checkpoint` while training."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args, **kwargs):
        forward = type(self.module).forward
        if not (torch.is_grad_enabled() and self.module.training):
            return forward(self.module, *args, **kwargs)
        return checkpoint(
            forward,
            self.module,
            *args,
            use_reentrant=False,
            context_fn=lambda: _recompute_contexts([self.module]),
            **kwargs,
        )


class _CheckpointedSequential:
    """A Sequential run in segments that each end at a neuron, each segment checkpointed while training."""

    def __init__(self, module: nn.Sequential) -> None:
        self.module = module

    def __call__(self, inputs):
        segments, current = [], []
        for layer in self.module:
            current.append(layer)
            if isinstance(layer, SpikingNeuron):
                segments.append(current)
                current = []
        if current:
            segments.append(current)
        for layers in segments:
            if torch.is_grad_enabled() and self.module.training:
                inputs = checkpoint(
                    _run_layers,
                    layers,
                    inputs,
                    use_reentrant=False,
                    context_fn=lambda layers=layers: _recompute_contexts(layers),
                )
            else:
                inputs = _run_layers(layers, inputs)
        return inputs


def _run_layers(layers: list[nn.Module], inputs):
    for layer in layers:
        inputs = layer(inputs)
    return inputs


def _recompute_contexts(modules: list[nn.Module]):
    """(forward context, recompute context) for `torch.utils.checkpoint`, taken when the forward starts.

    The recomputation runs in the backward pass, outside the forward's call: it gets back the
    forward's `TimeLayout` (hidden from spike hooks) and the states the block started from.
    """
    inside = [m for module in modules for m in module.modules()]
    stateful = [m for m in inside if isinstance(m, Stateful)]
    norms = [m for m in inside if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    at_start = [m.state_snapshot() for m in stateful]
    layout = dataclasses.replace(current_layout(), observed=False)

    @contextlib.contextmanager
    def recompute():
        at_end = [m.state_snapshot() for m in stateful]
        statistics = [
            (m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms
        ]
        for module, state in zip(stateful, at_start):
            module.restore_state(state)
        for norm in norms:
            norm.momentum = 0.0  # running = 1 * running + 0 * batch: the batch is counted once, in the forward
        try:
            with time_layout(layout):
                yield
        finally:
            for module, state in zip(stateful, at_end):
                module.restore_state(state)
            for norm, momentum, tracked in statistics:
                norm.momentum = momentum
                if tracked is not None:
                    norm.num_batches_tracked.copy_(tracked)

    return contextlib.nullcontext(), recompute()
