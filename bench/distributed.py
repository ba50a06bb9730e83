"""Runs over several processes with `torchrun`: data-parallel training, sharded evaluation, one writer.

    torchrun --nproc_per_node=N run_all.py ...           (one machine, N GPUs or N CPU processes)
    torchrun --nnodes=M --node_rank=... --master_addr=... --nproc_per_node=N run_all.py ...

`init_from_environment()` joins the process group that torchrun describes in its environment
variables (NCCL with CUDA, gloo on CPUs); without them every helper here is a no-op, so a plain
`python run_all.py` is one process as before. While training, `data_parallel(model)` routes every
call of the model through DistributedDataParallel (optionally with SyncBatchNorm), so any loss
function that calls the model gets averaged gradients. Training loaders are split with a
DistributedSampler, the test set is split into disjoint shards whose counts `gather_sum` adds
up, and only the main process (rank 0) writes records, reports, caches and progress.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from bench.errors import UserError


def init_from_environment() -> bool:
    """Join torchrun's process group when its variables are set; True when running distributed."""
    if not dist.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and dist.is_nccl_available()
        if use_nccl:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_nccl else "gloo")
        atexit.register(shutdown)
    return True


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; before the process group starts, the one torchrun set in RANK."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK) when the device is CUDA; the device otherwise."""
    if device.type == "cuda" and is_distributed() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (to write a cache), the others after it (to read it)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def shard_for_evaluation(dataset):
    """This process's disjoint share of a dataset (every rank-th sample), nothing repeated."""
    if not is_distributed():
        return dataset
    return torch.utils.data.Subset(dataset, range(rank(), len(dataset), world_size()))


def training_sampler(dataset, shuffle: bool, seed: int, drop_last: bool):
    """A DistributedSampler when running distributed (call `set_epoch` every epoch); None otherwise."""
    if not is_distributed():
        return None
    return torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


@contextlib.contextmanager
def data_parallel(model: nn.Module, device: torch.device, sync_batch_norm: bool = False) -> Iterator[nn.Module]:
    """While inside, calling `model(...)` runs DistributedDataParallel's forward: gradients are averaged."""
    if not is_distributed():
        yield model
        return
    if sync_batch_norm and device.type != "cuda":
        raise UserError("train.sync_batch_norm needs CUDA devices; leave it off on CPUs")
    originals = synchronize_norms(model) if sync_batch_norm else []
    wrapper = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.forward = _RoutedForward(model, wrapper)
    try:
        yield model
    finally:
        del model.forward
        restore_norms(model, originals)
        # DDP sends buffers (batch-norm statistics) from rank 0 before each forward, so the last
        # step left each process its own; make the replicas identical again for evaluation.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def synchronize_norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every batch norm of `model` replaced, in place, by one that synchronizes its statistics across
    processes and shares its parameters and buffers (tdBN keeps its scale); returns the originals
    for `restore_norms`, so that a trained network leaves with the modules it came with (the
    converters fold plain batch norms, and a cached network must not depend on how it trained)."""
    from bench.spiking.normalization import SyncThresholdDependentBatchNorm, ThresholdDependentBatchNorm

    originals = []
    for name, norm in list(model.named_modules()):
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or isinstance(norm, nn.SyncBatchNorm):
            continue
        if isinstance(norm, ThresholdDependentBatchNorm):
            synced = SyncThresholdDependentBatchNorm(
                norm.num_features,
                norm.alpha,
                norm.neuron_threshold,
                eps=norm.eps,
                momentum=norm.momentum,
                affine=norm.affine,
                track_running_stats=norm.track_running_stats,
            )
        else:
            synced = nn.SyncBatchNorm(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        if norm.affine:
            synced.weight, synced.bias = norm.weight, norm.bias
        synced.running_mean, synced.running_var = norm.running_mean, norm.running_var
        synced.num_batches_tracked = norm.num_batches_tracked
        synced.train(norm.training)
        model.set_submodule(name, synced)
        originals.append((name, norm))
    return originals


def restore_norms(model: nn.Module, originals: list[tuple[str, nn.Module]]) -> None:
    """Put back the batch norms `synchronize_norms` replaced (they share parameters and statistics)."""
    for name, norm in originals:
        norm.train(model.get_submodule(name).training)
        model.set_submodule(name, norm)


class _RoutedForward:
    """The model's forward entered through its DDP wrapper, whose own call comes back here."""

    def __init__(self, model: nn.Module, wrapper: nn.Module) -> None:
        self.model, self.wrapper, self.inside = model, wrapper, False

    def __call__(self, *args, **kwargs):
        if self.inside:
            return type(self.model).forward(self.model, *args, **kwargs)
        self.inside = True
        try:
            return self.wrapper(*args, **kwargs)
        finally:
            self.inside = False


def all_finite(value: torch.Tensor) -> bool:
    """Whether `value` is finite on every process (so that all stop together when one diverges)."""
    finite = torch.isfinite(value.detach()).all().to(torch.int32).reshape(1)
    if is_distributed():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def gather_sum(tally):
    """Every process's tally folded into one (`tally.add(other)`); a process may bring None."""
    if not is_distributed():
        return tally
    everyone = [None] * world_size()
    dist.all_gather_object(everyone, tally)
    present = [other for other in everyone if other is not None]
    if not present:
        return None
    merged = present[0]
    for other in present[1:]:
        merged.add(other)
    return merged
