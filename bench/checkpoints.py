"""Files that let long work resume: written whole or not at all, read without running code.

Training (`bench.training`) saves a checkpoint after every epoch, the harness (`bench.harness`)
saves a long simulation's partial curve after its batches. Both keep the random states with it,
so that a resumed run draws the same numbers as one that never stopped.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.errors import UserError


def write_atomically(path: Path, state: dict[str, Any], *, what: str, then: str) -> None:
    """Write `state` under a name of this process's own, then rename it: a crash or a second
    process writing the same file never leaves a damaged one behind. A failed write (a full disk)
    is a `UserError` that names the space needed and ends with `then` (what to do after)."""
    partial = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, partial)
        partial.replace(path)
    except (OSError, RuntimeError) as error:
        partial.unlink(missing_ok=True)
        needed = max(1.0, megabytes(state))
        raise UserError(
            f"cannot write the {what} {path} ({_write_failure(error, path.parent, needed)}); free about "
            f"{needed:.0f} MB in {path.parent} and {then}"
        ) from None


def read_safely(path: Path, *, what: str, instead: str) -> Any:
    """Tensors and plain data only (`weights_only`), so a file dropped in the cache cannot run
    code; a damaged or unsafe file is a `UserError` that says to delete it and do `instead`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many kinds for a damaged or unsafe file)
        raise UserError(
            f"{what} {path} cannot be read safely ({type(error).__name__}: it is damaged, or holds more than "
            f"tensors and plain data); delete it to {instead}"
        ) from None


def megabytes(state) -> float:
    """The size of the tensors in a (nested) state, in MB."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 2**20
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return sum(megabytes(value) for value in state)
    return 0.0


def _write_failure(error: Exception, folder: Path, needed_mb: float) -> str:
    """Why a write failed, in words: torch reports a full disk as a position mismatch of its zip writer."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    try:
        free_mb = shutil.disk_usage(folder).free / 2**20
    except OSError:
        return str(error).splitlines()[0]
    if free_mb < 2 * needed_mb:
        return f"no space left on the device: {free_mb:.1f} MB free"
    return str(error).splitlines()[0]


def random_states(loader, model: nn.Module) -> dict:
    """Everything the rest of a run draws from: torch (and CUDA), Python, NumPy, the data order,
    and the generators of modules that keep their own (`random_state()`, a Poisson encoder's)."""
    numpy_state = np.random.get_state()
    generator = getattr(loader, "generator", None)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_position": int(numpy_state[2]),
        "numpy_gauss": [int(numpy_state[3]), float(numpy_state[4])],
        "loader": generator.get_state() if generator is not None else None,
        "modules": {name: m.random_state() for name, m in model.named_modules() if hasattr(m, "random_state")},
    }


def restore_random_states(states: dict | None, loader, model: nn.Module) -> None:
    if not states:
        return  # a checkpoint from before random states were kept
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs than this one: the devices here take the first
        # states (with fewer, the rest start from the seed: exact resumption needs the same devices).
        for index, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    random.setstate((states["python_version"], tuple(states["python"]), states["python_gauss"]))
    has_gauss, gauss = states["numpy_gauss"]
    np.random.set_state(
        ("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_position"], has_gauss, gauss)
    )
    generator = getattr(loader, "generator", None)
    if generator is not None and states["loader"] is not None:
        generator.set_state(states["loader"])
    modules = dict(model.named_modules())
    for name, state in states.get("modules", {}).items():
        if name in modules and hasattr(modules[name], "set_random_state"):
            modules[name].set_random_state(state)
