"""The one training loop every method uses, with checkpoints, resume and divergence checks.

`fit` trains any module given a function from images `[B, C, H, W]` to logits `[B, K]`; the
direct method passes one that simulates `T_train` steps and averages the outputs. `trained_ann`
trains (or loads from the cache) the ANN of the configured architecture, shared by the `ann`
reference and the conversion method so that both see the same network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench import distributed
from bench.checkpoints import random_states, read_safely, restore_random_states, write_atomically
from bench.config import TrainConfig, hash_of
from bench.errors import UserError
from bench.progress import QUIET


class TrainingDiverged(RuntimeError):
    """The loss became non-finite: the run is recorded as failed, the suite goes on."""


@dataclass
class TrainingReport:
    """`history`: per epoch, `[epoch, mean training loss, training accuracy]` (augmented images,
    at the method's training T), kept in the checkpoint across resumes; epochs resumed from a
    checkpoint written before checkpoints kept a history are missing from it."""

    epochs: int
    wall_s: float
    history: list[list[float]] = field(default_factory=list)


def build_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "amsgrad":  # Adam with L2 weight decay and the AMSGrad maximum (hybrid's reference)
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, amsgrad=True)
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


# On a GPU the training loop reads its sums (loss, accuracy, divergence) every this many steps.
SYNC_EVERY_STEPS = 20


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
    start_epoch, wall_s, history = _resume(checkpoint_path, model, optimizer, schedule, loader)
    use_amp = train.amp and device.type == "cuda"
    memory_format = _fastest_memory_format(model)
    model.to(memory_format=memory_format)
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
            history.append([epoch + 1, round(mean_loss, 4), round(accuracy, 4)])
            _check_finite_weights(model, epoch, divergence_hint)
            if checkpoint_path is not None and distributed.is_main():
                _save(checkpoint_path, model, optimizer, schedule, epoch + 1, wall_s, loader, history)
    model.eval()
    return TrainingReport(train.epochs, wall_s, history)


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
    # The sums stay on the device and are read every `every` steps (every step on a CPU, where
    # reading costs nothing): a read waits for the GPU, once per step it would stall the queue.
    every = _sync_every(device)
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    bad_loss = torch.zeros((), device=device)  # the epoch's first non-finite loss, 0 while there is none
    bad_step = torch.full((), -1, device=device, dtype=torch.int64)
    seen, shown = 0, 0
    for step, (images, labels) in enumerate(loader):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if images.ndim == 4:
            images = images.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = compute_logits(images)
            loss = loss_of(outputs.float(), labels)
        value = loss.detach()
        first_bad = torch.logical_not(torch.isfinite(value)) & (bad_step < 0)
        bad_step = torch.where(first_bad, step, bad_step)
        bad_loss = torch.where(first_bad, value, bad_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total_loss += value * len(labels)
        predicted = outputs if outputs.ndim == 2 else outputs.mean(0)
        correct += (predicted.argmax(1) == labels).sum()
        seen += len(labels)
        if (step + 1) % every and step + 1 < len(loader):
            continue
        if not distributed.all_finite(bad_loss):  # every process stops at the same step
            where = f"at epoch {epoch + 1}, step {int(bad_step) + 1}" if int(bad_step) >= 0 else "on another process"
            raise TrainingDiverged(f"loss became {bad_loss.item()} {where}: {divergence_hint}")
        task.advance(
            step + 1 - shown,
            epoch=f"{epoch + 1}/{train.epochs}",
            loss=total_loss.item() / seen,
            acc=correct.item() / seen,
        )
        shown = step + 1
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)


def _sync_every(device: torch.device) -> int:
    return 1 if device.type == "cpu" else SYNC_EVERY_STEPS


CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "epoch", "wall_s")


def _resume(path: Path | None, model, optimizer, schedule, loader) -> tuple[int, float, list[list[float]]]:
    """Load a checkpoint (`read_safely`: it cannot run code): (epochs done, wall time, history);
    the random states come back too, so the run goes on as if never stopped. Under torchrun the
    main process reads it and sends it to the others, whose node may not have the file."""
    state = distributed.from_main(lambda: _read_checkpoint(path))
    if state is None:
        return 0, 0.0, []
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint {path} does not fit this network ({_mismatch(model, state['model'], error)}); it was "
            f"written by another version or architecture: delete it to train from scratch"
        ) from None
    restore_random_states(state.get("random"), loader, model)
    return state["epoch"], state["wall_s"], list(state.get("history", []))


def _read_checkpoint(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    state = read_safely(path, what="checkpoint", instead="train from scratch")
    if not isinstance(state, dict) or not set(CHECKPOINT_KEYS) <= set(state):
        raise UserError(f"{path} is not a spikebench checkpoint; delete it to train from scratch")
    return state


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


def _save(path: Path, model, optimizer, schedule, epoch: int, wall_s: float, loader, history=()) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": epoch,
        "wall_s": wall_s,
        "random": random_states(loader, model),
        "history": list(history),
    }
    write_atomically(
        path, state, what="checkpoint", then="run the same command again: it resumes from the last checkpoint"
    )


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
