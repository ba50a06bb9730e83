"""The one training loop every method uses, with checkpoints, resume and divergence checks.

`fit` trains any module given a function from images `[B, C, H, W]` to logits `[B, K]`; the
direct method passes one that simulates `T_train` steps and averages the outputs. `trained_ann`
trains (or loads from the cache) the ANN of the configured architecture, shared by the `ann`
reference and the conversion method so that both see the same network.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench import distributed
from bench.config import TrainConfig, hash_of
from bench.errors import UserError
from bench.progress import QUIET


class TrainingDiverged(RuntimeError):
    """The loss became non-finite: the run is recorded as failed, the suite goes on."""


@dataclass
class TrainingReport:
    epochs: int
    wall_s: float
    final_loss: float
    final_train_accuracy: float


def build_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(
        params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay, nesterov=train.momentum > 0
    )


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    total_steps = max(total_steps, 1)
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total_steps)
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def fit(
    model: nn.Module,
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
    loader: torch.utils.data.DataLoader,
    train: TrainConfig,
    device: torch.device,
    *,
    checkpoint_path: Path | None = None,
    reporter=None,
    description: str = "train",
    divergence_hint: str = "lower the learning rate",
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> TrainingReport:
    """Train `model` for `train.epochs`, resuming from `checkpoint_path` when it holds a run.

    `compute_logits(images)` gives logits `[B, K]`, or outputs per step `[T, B, K]` for a `loss`
    that reads every step; `loss(outputs, labels)` defaults to cross-entropy on `[B, K]` logits
    with the run's label smoothing. Training accuracy reads the time average of `[T, B, K]`.
    """
    reporter = reporter or QUIET
    loss = loss or _cross_entropy(train.label_smoothing)
    optimizer = build_optimizer(model.parameters(), train)
    schedule = build_schedule(optimizer, train, train.epochs * len(loader))
    start_epoch, wall_s = _resume(checkpoint_path, model, optimizer, schedule, loader)
    use_amp = train.amp and device.type == "cuda"
    memory_format = _fastest_memory_format(model)
    model.to(memory_format=memory_format)
    mean_loss, accuracy = float("nan"), float("nan")
    # Under torchrun every call of `model` goes through DistributedDataParallel while training.
    parallel = distributed.data_parallel(model, device, sync_batch_norm=train.sync_batch_norm)
    with reporter.task(description, total=(train.epochs - start_epoch) * len(loader)) as task, parallel:
        for epoch in range(start_epoch, train.epochs):
            started = time.perf_counter()
            model.train()
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)  # a new shuffle of the shards every epoch
            mean_loss, accuracy = _train_epoch(
                model,
                compute_logits,
                loss,
                loader,
                optimizer,
                schedule,
                train,
                device,
                use_amp,
                task,
                epoch,
                divergence_hint,
                memory_format,
            )
            wall_s += time.perf_counter() - started
            _check_finite_weights(model, epoch, divergence_hint)
            if checkpoint_path is not None and distributed.is_main():
                _save(checkpoint_path, model, optimizer, schedule, epoch + 1, wall_s, loader)
    model.eval()
    return TrainingReport(train.epochs, wall_s, mean_loss, accuracy)


def _check_finite_weights(model: nn.Module, epoch: int, divergence_hint: str) -> None:
    """A last step can leave non-finite weights behind a finite loss: that run diverged too."""
    broken = [name for name, parameter in model.named_parameters() if not torch.isfinite(parameter).all()]
    if broken:
        raise TrainingDiverged(f"weights of {broken[0]} became non-finite in epoch {epoch + 1}: {divergence_hint}")


def _cross_entropy(label_smoothing: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    return loss


def _fastest_memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last for convolutional networks: faster convolutions with oneDNN on CPUs and with
    tensor cores on GPUs (`python -m bench.studies.speed`, results/perf.md). Only the memory order changes."""
    has_convolutions = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if has_convolutions else torch.contiguous_format


def _train_epoch(
    model,
    compute_logits,
    loss_of,
    loader,
    optimizer,
    schedule,
    train,
    device,
    use_amp,
    task,
    epoch,
    divergence_hint,
    memory_format,
):
    total_loss, correct, seen = 0.0, 0, 0
    for step, (images, labels) in enumerate(loader):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if images.ndim == 4:
            images = images.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = compute_logits(images)
            loss = loss_of(outputs.float(), labels)
        if not distributed.all_finite(loss):  # every process stops at the same step
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: {divergence_hint}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * len(labels)
        predicted = outputs if outputs.ndim == 2 else outputs.mean(0)
        correct += (predicted.argmax(1) == labels).sum().item()
        seen += len(labels)
        task.advance(epoch=f"{epoch + 1}/{train.epochs}", loss=total_loss / seen, acc=correct / seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "epoch", "wall_s")


def _resume(path: Path | None, model, optimizer, schedule, loader) -> tuple[int, float]:
    """Load a checkpoint: tensors and plain data only (`weights_only`), so a file dropped in the
    cache cannot run code; the random states come back too, so the run goes on as if never stopped."""
    if path is None or not path.is_file():
        return 0, 0.0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many kinds for a damaged or unsafe file)
        raise UserError(
            f"checkpoint {path} cannot be read safely ({type(error).__name__}: it is damaged, or holds more than "
            f"tensors and plain data); delete it to train from scratch"
        ) from None
    if not isinstance(state, dict) or not set(CHECKPOINT_KEYS) <= set(state):
        raise UserError(f"{path} is not a spikebench checkpoint; delete it to train from scratch")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {path} does not fit this network ({_mismatch(model, state['model'], error)}); it was "
            f"written by another version or architecture: delete it to train from scratch"
        ) from None
    _restore_random_states(state.get("random"), loader, model)
    return state["epoch"], state["wall_s"]


def _mismatch(model: nn.Module, saved, error: Exception) -> str:
    """How a saved state dict differs from the network's, in a few words (torch's message spans lines)."""
    if not isinstance(saved, dict):
        return "its weights are not a state dict"
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    reshaped = [
        key
        for key in sorted(set(own) & set(saved))
        if isinstance(saved[key], torch.Tensor) and saved[key].shape != own[key].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing, such as {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unknown, such as {unexpected[0]}")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape, such as {key} "
            f"({list(saved[key].shape)} saved, {list(own[key].shape)} here)"
        )
    return ", ".join(parts) or str(error).strip().splitlines()[0]


def _save(path: Path, model, optimizer, schedule, epoch: int, wall_s: float, loader) -> None:
    """Write a checkpoint under a name of this process's own, then rename it: a crash or a second
    process writing the same checkpoint never leaves a damaged file behind."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": epoch,
        "wall_s": wall_s,
        "random": _random_states(loader, model),
    }
    partial = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, partial)
        partial.replace(path)
    except (OSError, RuntimeError) as error:
        partial.unlink(missing_ok=True)
        needed = max(1.0, _megabytes(state))
        raise UserError(
            f"cannot write the checkpoint {path} ({_write_failure(error, path.parent, needed)}); free about "
            f"{needed:.0f} MB in {path.parent} and run the same command again: it resumes from the last checkpoint"
        ) from None


def _megabytes(state) -> float:
    """The size of the tensors in a (nested) checkpoint, in MB."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 2**20
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return sum(_megabytes(value) for value in state)
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


def _random_states(loader, model: nn.Module) -> dict:
    """Everything the rest of training draws from: torch (and CUDA), Python, NumPy, the data order,
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


def _restore_random_states(states: dict | None, loader, model: nn.Module) -> None:
    if not states:
        return  # a checkpoint from before random states were kept
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
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


def trained_ann(context) -> tuple[nn.Module, TrainingReport]:
    """The ANN of the context's architecture, trained once per data/model/train setting."""
    key = hash_of([context.fingerprint, context.train])
    checkpoint = Path(context.cache_dir) / f"ann-{context.architecture}-{key}.pt"
    torch.manual_seed(context.seed)
    model = context.build_ann().to(context.device)
    report = fit(
        model,
        model,
        context.loader("train", shuffle=True),
        context.train,
        context.device,
        checkpoint_path=checkpoint,
        reporter=context.progress,
        description=f"train ann {context.architecture}",
    )
    return model, report
