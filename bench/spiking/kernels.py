"""A LIF layer's whole time loop as one GPU kernel per call (Triton), for `bench.spiking.fused`.

One program owns a block of neurons and walks all T steps with their potentials in registers, so
a layer call is one kernel, not a few per step: the forward reads I[t] and writes the spikes (and,
for training, the distance to threshold x[t] = h[t] - threshold); the backward walks time in
reverse with the closed-form derivatives of `bench.spiking.fused`, given the surrogate's slope
g[t] = surrogate.grad(x[t]) computed beforehand for all steps at once (any registered surrogate,
no kernel per shape). Same arithmetic as the per-step loops in float32, so the spikes are the
same and the potentials and gradients equal to rounding.

Used on CUDA whenever Triton imports. With `TRITON_INTERPRET=1` set before the import, Triton's
interpreter runs the same kernels on CPU tensors (how the tests check them on a machine without a
GPU).

Shapes: the sequences are `[T, N]` in memory, each step one dense block of N elements in a layout
shared by all of them (channels-last stays so); a current constant in time has step stride 0.
`threshold` is one value or one per element of a step, `state` is one step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 (absent, or broken on this machine: the per-step loops run instead)
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK = 1024
_enabled = True


def usable(tensor: torch.Tensor) -> bool:
    """Whether the kernels run on `tensor`'s device: CUDA with Triton, or CPU under its interpreter."""
    if triton is None or not _enabled:
        return False
    return tensor.device.type == "cuda" or (INTERPRETED and tensor.device.type == "cpu")


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """The per-step loops of `bench.spiking.fused` while inside (to time the kernels against them)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def forward(current, state, threshold, spikes, distance, *, leak: float, reset: str, fresh_at: float | None):
    """Advance `state` (one step, float32, updated in place) through `current` `[T, ...]`, writing
    `spikes` and, when given, `distance` (both `[T, ...]` in the layout of a step of `state`).
    `fresh_at` not None: the state starts at `fresh_at * threshold` instead of its content."""
    steps, size = spikes.shape[0], state.numel()
    if steps == 0 or size == 0:
        return
    grid = (triton.cdiv(size, BLOCK),)
    _forward_kernel[grid](
        current,
        current.stride(0),
        threshold,
        state,
        spikes,
        spikes if distance is None else distance,
        size,
        steps,
        float(leak),
        0.0 if fresh_at is None else float(fresh_at),
        BLOCK=BLOCK,
        PER_ELEMENT=threshold.numel() > 1,
        FRESH=fresh_at is not None,
        SUBTRACT=reset == "subtract",
        KEEP_DISTANCE=distance is not None,
    )


def backward(distance, slope, grad_spikes, grad_state, threshold, grad_current, *, leak, reset, detach):
    """Fill `grad_current` `[T, ...]` (float32) with dL/dI from the saved `distance`, the surrogate's
    `slope` at it, dL/dspikes `grad_spikes` (or None) and dL/dfinal-state `grad_state` (or None)."""
    steps, size = distance.shape[0], distance[0].numel()
    if steps == 0 or size == 0:
        return
    grid = (triton.cdiv(size, BLOCK),)
    _backward_kernel[grid](
        (steps - 1) * size,
        distance,
        slope,
        distance if grad_spikes is None else grad_spikes,
        distance if grad_state is None else grad_state,
        threshold,
        grad_current,
        size,
        steps,
        float(leak),
        BLOCK=BLOCK,
        PER_ELEMENT=threshold.numel() > 1,
        HAS_GRAD_SPIKES=grad_spikes is not None,
        HAS_GRAD_STATE=grad_state is not None,
        SUBTRACT=reset == "subtract",
        DETACH=detach,
    )


if triton is not None:

    @triton.jit
    def _threshold_block(threshold, offsets, inside, PER_ELEMENT: tl.constexpr):
        """The block's thresholds in float32: one per element, or the one value read for all."""
        if PER_ELEMENT:
            limit = tl.load(threshold + offsets, mask=inside, other=1.0)
        else:
            limit = tl.load(threshold + offsets * 0, mask=inside, other=1.0)
        return limit.to(tl.float32)

    @triton.jit
    def _forward_kernel(
        current,
        current_step_stride,
        threshold,
        state,
        spikes,
        distance,
        size,
        steps,
        leak,
        fresh_at,
        BLOCK: tl.constexpr,
        PER_ELEMENT: tl.constexpr,
        FRESH: tl.constexpr,
        SUBTRACT: tl.constexpr,
        KEEP_DISTANCE: tl.constexpr,
    ):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < size
        limit = _threshold_block(threshold, offsets, inside, PER_ELEMENT)
        if FRESH:
            potential = tl.zeros([BLOCK], dtype=tl.float32) + fresh_at * limit
        else:
            potential = tl.load(state + offsets, mask=inside, other=0.0).to(tl.float32)
        # Pointers advance step by step: 64-bit arithmetic, so T * N may pass 2**31.
        current_at = current + offsets
        spikes_at = spikes + offsets
        distance_at = distance + offsets
        for _ in range(steps):
            step_current = tl.load(current_at, mask=inside, other=0.0).to(tl.float32)
            potential = potential * leak + step_current
            below = potential - limit
            fired = below >= 0
            tl.store(spikes_at, fired.to(spikes.dtype.element_ty), mask=inside)
            if KEEP_DISTANCE:
                tl.store(distance_at, below, mask=inside)
            if SUBTRACT:
                potential = tl.where(fired, below, potential)
            else:
                potential = tl.where(fired, 0.0, potential)
            current_at += current_step_stride
            spikes_at += size
            distance_at += size
        tl.store(state + offsets, potential, mask=inside)

    @triton.jit
    def _backward_kernel(
        last,
        distance,
        slope,
        grad_spikes,
        grad_state,
        threshold,
        grad_current,
        size,
        steps,
        leak,
        BLOCK: tl.constexpr,
        PER_ELEMENT: tl.constexpr,
        HAS_GRAD_SPIKES: tl.constexpr,
        HAS_GRAD_STATE: tl.constexpr,
        SUBTRACT: tl.constexpr,
        DETACH: tl.constexpr,
    ):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < size
        limit = _threshold_block(threshold, offsets, inside, PER_ELEMENT)
        if HAS_GRAD_STATE:  # dL/dv of the last step, then leak * dL/dh of the step after
            grad_after = tl.load(grad_state + offsets, mask=inside, other=0.0).to(tl.float32)
        else:
            grad_after = tl.zeros([BLOCK], dtype=tl.float32)
        distance_at = distance + last + offsets
        slope_at = slope + last + offsets
        grad_spikes_at = grad_spikes + last + offsets
        grad_current_at = grad_current + last + offsets
        for _ in range(steps):
            below = tl.load(distance_at, mask=inside, other=0.0)
            gradient = tl.load(slope_at, mask=inside, other=0.0).to(tl.float32)
            if HAS_GRAD_SPIKES:
                grad_spike = tl.load(grad_spikes_at, mask=inside, other=0.0).to(tl.float32)
            else:
                grad_spike = tl.zeros([BLOCK], dtype=tl.float32)
            if SUBTRACT:
                if DETACH:
                    grad_potential = grad_after + gradient * grad_spike
                else:
                    grad_potential = grad_after + gradient * (grad_spike - limit * grad_after)
            else:
                kept = 1.0 - (below >= 0).to(tl.float32)
                if not DETACH:
                    kept = kept - (below + limit) * gradient
                grad_potential = grad_spike * gradient + grad_after * kept
            tl.store(grad_current_at, grad_potential, mask=inside)
            grad_after = grad_potential * leak
            distance_at -= size
            slope_at -= size
            grad_spikes_at -= size
            grad_current_at -= size
