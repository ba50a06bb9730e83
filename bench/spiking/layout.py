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
