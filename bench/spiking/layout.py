"""How the rows of a flattened batch map to time: the one thing a neuron must know about its call.

Stateless layers run on `[T*B, ...]`, so a neuron inside an ANN-shaped body receives its current
flattened. The network that runs the body says how to read it, for the duration of one call:

    with time_layout(TimeLayout(time_steps=4)):
        body(inputs)                    # every neuron views its current as [4, B, ...]

A layout is scoped to the call (a context variable, like `torch.no_grad`), never stored on the
neurons, so nothing outside a neuron sets its attributes and nothing leaks into the next call.
Outside any layout a neuron sees one time step.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TimeLayout:
    """time_steps: T of this call. constant_rows: an input of this many rows is one current
    `[B, ...]` held for all T steps (the time-constant prefix), viewed without copying.
    compiled: run neuron loops as `torch.compile` kernels. observed: spike hooks see this call
    (False for internal re-runs: the prefix probe, activation recomputation)."""

    time_steps: int = 1
    constant_rows: int | None = None
    compiled: bool = False
    observed: bool = True

    def time_major(self, current: torch.Tensor) -> torch.Tensor:
        """`[T*B, ...]` -> `[T, B, ...]`; a constant `[B, ...]` current becomes an expanded view."""
        if self.constant_rows is not None and self.time_steps > 1 and current.shape[0] == self.constant_rows:
            return current.unsqueeze(0).expand(self.time_steps, *current.shape)
        return current.unflatten(0, (self.time_steps, -1))


# A frozen dataclass: the shared default cannot be changed through the variable.
_LAYOUT: contextvars.ContextVar[TimeLayout] = contextvars.ContextVar(
    "spikebench_time_layout",
    default=TimeLayout(),  # noqa: B039
)


@contextlib.contextmanager
def time_layout(layout: TimeLayout) -> Iterator[TimeLayout]:
    """Neurons called inside the block read their current with `layout`."""
    token = _LAYOUT.set(layout)
    try:
        yield layout
    finally:
        _LAYOUT.reset(token)


def current_layout() -> TimeLayout:
    return _LAYOUT.get()


class OutputBuffers:
    """Spike buffers that a neuron reuses from one call to the next, for one simulation.

    A simulation in time chunks calls every neuron once per chunk with currents of the same shape.
    Writing each call's spikes into fresh memory costs more than the neuron's own arithmetic on a
    CPU, where the allocator hands large blocks back to the system and every chunk then starts
    from unmapped pages. Inside `reused_outputs()` a neuron without autograd writes into the
    buffer of its previous call instead, so a call's output is valid only until the same neuron's
    next call. The harness reads each chunk before it simulates the next; code that keeps outputs
    across calls must not enter the scope. The buffers are released when the scope ends.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def take(self, owner: object, shape: tuple[int, ...], strides: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """`owner`'s buffer of this shape and these strides, with the dtype and device of `like`."""
        key = (id(owner), shape, strides, like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.empty_strided(shape, strides, dtype=like.dtype, device=like.device)
        return buffer


_BUFFERS: contextvars.ContextVar[OutputBuffers | None] = contextvars.ContextVar(
    "spikebench_output_buffers", default=None
)


@contextlib.contextmanager
def reused_outputs(enabled: bool = True) -> Iterator[OutputBuffers | None]:
    """Neurons called without autograd inside the block reuse their output buffers (`OutputBuffers`);
    `enabled=False` turns reuse off inside an enclosing scope (a call whose outputs are compared)."""
    token = _BUFFERS.set(OutputBuffers() if enabled else None)
    try:
        yield _BUFFERS.get()
    finally:
        _BUFFERS.reset(token)


def output_buffers() -> OutputBuffers | None:
    """The reuse scope neurons are called in, or None outside `reused_outputs()`."""
    return _BUFFERS.get()
