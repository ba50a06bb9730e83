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

Across nodes a process sees only its own disk, so every decision that reads a file (is a setting
done, is there a checkpoint to resume from) is made once by the main process and sent to the
others (`from_main`), checkpoint included. A failure on any process (a bug, out of memory) ends
every process of the run, recorded once by the main one (`FailureWatch`): the others would
otherwise wait in their next collective until the timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from bench.errors import UserError

T = TypeVar("T")


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


def from_main(read: Callable[[], T]) -> T:
    """`read()` on the main process, its value (or its `UserError`) sent to every other process.

    For every decision that reads a file: on another node the file is not there, and a process
    that decides on its own falls out of step with the others' collectives."""
    if not is_distributed():
        return read()
    message = [None, None]
    if is_main():
        try:
            message = [read(), None]
        except UserError as error:
            message = [None, str(error)]
    dist.broadcast_object_list(message, src=0)
    value, error = message
    if error is not None:
        raise UserError(error)
    return value


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


# Keys of the process group's store that carry a failure from any process to the main one.
_FAILURES = "spikebench/failures"
_FAILURE = "spikebench/failure"
_RECORDED = "spikebench/failure-recorded"


class FailureWatch:
    """Under torchrun, a failure on one process ends every process, and it is recorded once.

    The process that fails publishes its message in the process group's store (`fail`); a thread
    of the main process watches for it, has it recorded by `record(message)` (set by the runner
    around each setting, `recording`), and ends the main process, which makes torchrun end the
    rest; the failing process waits for the record and ends too. Only the first failure is
    published and recorded (a bug hits every process at once). A mistake of the user's (a
    `UserError`, e.g. data missing on one node) ends every process with its line and no record.
    Exit status: 1 for a failure, 2 for a user's mistake. Without torchrun it does nothing.
    """

    def __init__(self, poll_s: float = 0.2, wait_for_record_s: float = 120.0) -> None:
        self.record: Callable[[str], None] | None = None
        self.poll_s, self.wait_for_record_s = poll_s, wait_for_record_s
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = None
        if is_distributed() and is_main():
            self._thread = threading.Thread(target=self._watch, name="spikebench-failure-watch", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def recording(self, record: Callable[[str], None]) -> Iterator[None]:
        """While inside, a failure of any process is recorded by `record(message)`."""
        self.record = record
        try:
            yield
        finally:
            self.record = None

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def fail(self, message: str, *, user_error: bool = False) -> None:
        """This process failed: record it once (through the main process) and end every process."""
        if not is_distributed():
            return
        store = _store()
        first = store.add(_FAILURES, 1) == 1
        kind = "user_error" if user_error else "failure"
        if first:
            store.set(_FAILURE, json.dumps({"rank": rank(), "kind": kind, "message": message}))
            if is_main():
                self._record_and_stop({"rank": rank(), "kind": kind, "message": message})
        if not user_error:  # torchrun ends the others once a process exits: let the record be written first
            deadline = time.monotonic() + self.wait_for_record_s
            while not store.check([_RECORDED]) and time.monotonic() < deadline:
                time.sleep(self.poll_s)
        _exit(2 if user_error else 1)

    def _watch(self) -> None:
        store = _store()
        while not self._stopped.wait(self.poll_s):
            if store.check([_FAILURE]):
                failure = json.loads(store.get(_FAILURE).decode())
                if failure["rank"] != rank():  # the main process handles its own failure in `fail`
                    self._record_and_stop(failure)
                return

    def _record_and_stop(self, failure: dict[str, Any]) -> None:
        with self._lock:
            where = f"process {failure['rank']} of {world_size()}"
            if failure["kind"] == "user_error":
                print(f"error: {failure['message']} (on {where}; every process stops)", file=sys.stderr)
                _exit(2)
            if self.record is not None:
                self.record(failure["message"])
            _store().set(_RECORDED, "1")
            print(
                f"spikebench: {where} failed: {failure['message']}; the failure is recorded and every process "
                "stops (torchrun cannot go on without it); run the same command again to go on with the next "
                "setting (the failed one is skipped unless --rerun)",
                file=sys.stderr,
            )
            _exit(1)


def _store():
    """The key-value store every process of the group shares (torchrun's rendezvous store)."""
    return dist.distributed_c10d._get_default_store()


def _exit(status: int) -> None:
    """End this process now: its peers may be blocked in a collective, so no cleanup waits on them."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
