"""Two CPU processes under torchrun (gloo): data-parallel training keeps the replicas identical,
the sharded evaluation is gathered, and exactly one set of records is written."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench import distributed
from bench.harness import evaluate
from bench.spiking import DirectEncoder, LIFNeuron, SpikingNetwork, replace_relus

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent('''
    """Methods that train like `ann` and `direct` and leave a hash of their weights per process."""
    import hashlib
    import os

    from bench import distributed
    from bench.spiking import AnalogModel
    from bench.training import trained_ann
    from methods.direct import DirectOptions, build_direct
    from bench.api import register_method


    def leave_hash(name, model):
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        path = os.path.join(os.environ["SPIKEBENCH_TEST_OUT"], f"{name}-rank{distributed.rank()}.txt")
        with open(path, "w") as out:
            out.write(f"{distributed.world_size()} {digest.hexdigest()}")


    @register_method("replica_ann", family="reference")
    def replica_ann(context):
        network, _ = trained_ann(context)
        leave_hash("ann", network)
        return AnalogModel(network)


    @register_method("replica_direct", family="direct", options=DirectOptions)
    def replica_direct(context):
        model = build_direct(context)
        leave_hash("direct", model)
        return model
''')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_two_processes_train_identical_replicas_and_write_one_set_of_records(tmp_path):
    results = tmp_path / "results"
    done = _torchrun(tmp_path, "replica_ann,replica_direct", "--results-dir", str(results), plugin=PLUGIN)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name in ("ann", "direct"):
        hashes = [(tmp_path / f"{name}-rank{rank}.txt").read_text().split() for rank in (0, 1)]
        assert hashes[0][0] == "2", "the method did not run under two processes"
        assert hashes[0] == hashes[1], f"{name}: the replicas differ after training"

    lines = (results / "tiny-imagenette" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted((r["label"], r["time_steps"]) for r in records) == [
        ("replica_ann", 1),
        ("replica_ann", 2),
        ("replica_direct", 1),
        ("replica_direct", 2),
    ]
    assert len({r["run_id"] for r in records}) == 1
    assert all(r["status"] == "ok" for r in records)
    assert all(r["world_size"] == 2 and r["deterministic"] is False for r in records)
    assert (results / "tiny-imagenette" / "leaderboard.md").is_file()


NODES_PLUGIN = PLUGIN + textwrap.dedent("""

    # Each process works in its own folder, as if on its own node: the records (relative
    # --results-dir) and the cache (relative cache_dir) of one are not seen by the other.
    node = os.path.join(os.environ["SPIKEBENCH_TEST_OUT"], f"node{os.environ['RANK']}")
    os.makedirs(node, exist_ok=True)
    os.chdir(node)


    @register_method("rank_one_fails", family="reference")
    def rank_one_fails(context):
        if distributed.rank() == 1:
            raise RuntimeError("injected failure on rank 1")
        distributed.barrier()  # rank 0 waits in a collective, as in a training step
        raise AssertionError("rank 0 must not get past the collective")
""")


def _torchrun(
    tmp_path, methods: str, *extra: str, plugin: str = NODES_PLUGIN, timeout: float = 180
) -> subprocess.CompletedProcess:
    """The tiny suite under two CPU processes; with `NODES_PLUGIN` each works in its own node folder."""
    (tmp_path / "test_plugin.py").write_text(plugin)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(ROOT / "run_all.py"),
        "--dataset",
        "tiny-imagenette",
        "--methods",
        methods,
        "--plugin",
        "test_plugin",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--results-dir",
        "results",
        "--quiet",
        *("--set data.train_subset=64 --set data.test_subset=32 --set model.name=cifar_vgg_tiny".split()),
        *("--set eval.time_steps=[1,2] --set cache_dir=cache".split()),
        *extra,
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "SPIKEBENCH_TEST_OUT": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=timeout)


def _node_records(tmp_path, node: int) -> list[dict]:
    store = tmp_path / f"node{node}" / "results" / "tiny-imagenette" / "records.jsonl"
    return [json.loads(line) for line in store.read_text().splitlines()] if store.is_file() else []


def _hashes(tmp_path, name: str) -> list[list[str]]:
    return [(tmp_path / f"{name}-rank{rank}.txt").read_text().split() for rank in (0, 1)]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_decisions_that_read_files_are_made_by_the_main_process_for_every_node(tmp_path):
    """Records and checkpoints live on the main process's node only: the others skip a finished
    setting with it, and resume from its checkpoint, instead of training alone until the timeout."""
    first = _torchrun(tmp_path, "replica_ann")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    trained = _hashes(tmp_path, "ann")
    assert trained[0] == trained[1] and trained[0][0] == "2"
    assert not (tmp_path / "node1" / "cache").exists(), "only the main process writes the cache"
    assert len(_node_records(tmp_path, 0)) == 2 and not _node_records(tmp_path, 1)

    for name in ("ann-rank0.txt", "ann-rank1.txt"):
        (tmp_path / name).unlink()
    again = _torchrun(tmp_path, "replica_ann")  # done on node 0: both processes skip it
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not (tmp_path / "ann-rank1.txt").exists() and len(_node_records(tmp_path, 0)) == 2

    resumed = _torchrun(tmp_path, "replica_ann", "--rerun")  # both start from node 0's finished checkpoint
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert _hashes(tmp_path, "ann") == trained


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_a_failure_on_one_process_ends_every_process_and_is_recorded_once(tmp_path):
    stopped = _torchrun(tmp_path, "rank_one_fails,replica_ann", timeout=120)
    assert stopped.returncode != 0
    assert "process 1 of 2 failed: RuntimeError: injected failure on rank 1" in stopped.stderr
    records = _node_records(tmp_path, 0)
    assert [(r["label"], r["status"]) for r in records] == [("rank_one_fails", "failed")]
    assert "injected failure on rank 1" in records[0]["error"] and records[0]["world_size"] == 2
    assert not (tmp_path / "ann-rank0.txt").exists(), "the suite went on after the failure"

    resumed = _torchrun(tmp_path, "rank_one_fails,replica_ann")  # the failed setting is skipped
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert [(r["label"], r["status"]) for r in _node_records(tmp_path, 0)].count(("replica_ann", "ok")) == 2


def test_one_process_keeps_its_hashes_and_the_global_batch_is_split_among_processes(monkeypatch):
    """World size enters the cache and reference keys only above one process, and a process trains on
    its share of data.batch_size (the global batch), so eight processes run one process's recipe."""
    from bench.config import load_config
    from bench.data import load_dataset
    from bench.runner import make_loader_factory, reference_key, training_fingerprint

    config = load_config("default", ["data.train_subset=64", "data.batch_size=32"])
    single = (training_fingerprint(config), reference_key(config, "ann", {}))
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    monkeypatch.setattr(distributed, "training_sampler", lambda *args, **kwargs: None)
    assert training_fingerprint(config) != single[0] and reference_key(config, "ann", {}) != single[1]
    dataset = load_dataset(config.data.name, train_subset=64, test_subset=8)
    loader = make_loader_factory(dataset, config)("train", shuffle=True)
    assert loader.batch_size == 8


def test_helpers_are_no_ops_in_one_process():
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.gather_sum("tally") == "tally"
    data = list(range(5))
    assert distributed.shard_for_evaluation(data) is data
    assert distributed.training_sampler(data, True, 0, False) is None
    model = torch.nn.Linear(2, 2)
    with distributed.data_parallel(model, torch.device("cpu")) as wrapped:
        assert wrapped is model and "forward" not in model.__dict__


def _evaluate_shard(rank: int, port: int, out: str) -> None:
    """One process of the gather test: evaluate this rank's shard of 10 samples, keep the result."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        images, labels, model = _shard_problem()
        shard = distributed.shard_for_evaluation(torch.utils.data.TensorDataset(images, labels))
        loader = torch.utils.data.DataLoader(shard, batch_size=3)
        evaluation = evaluate(model, loader, [1, 3], torch.device("cpu"), num_classes=4)
        torch.save(evaluation, Path(out) / f"evaluation-{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _shard_problem():
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    replace_relus(body, lambda name: LIFNeuron(threshold=0.3))
    return torch.randn(10, 3, 2, 2), torch.randint(0, 4, (10,)), SpikingNetwork(body, DirectEncoder())


def test_sharded_evaluation_adds_up_to_the_whole_test_set(tmp_path):
    torch.multiprocessing.spawn(_evaluate_shard, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    images, labels, model = _shard_problem()
    whole = evaluate(
        model,
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=3),
        [1, 3],
        torch.device("cpu"),
        num_classes=4,
    )
    for rank in (0, 1):
        gathered = torch.load(tmp_path / f"evaluation-{rank}.pt", weights_only=False)
        assert gathered.num_samples == 10
        for field in ("top1", "spikes_per_neuron", "sops", "macs"):
            assert getattr(gathered, field) == pytest.approx(getattr(whole, field)), field
        for t in (1, 3):
            assert gathered.firing_rates[t] == pytest.approx(whole.firing_rates[t])


def test_synchronized_norms_convert_to_the_same_spiking_network_and_go_back_after_training():
    """train.sync_batch_norm: the norms are made SyncBatchNorm for training; the converters fold them
    all the same, and the trained network leaves with its own modules (tdBN with its scale)."""
    from torch import nn

    from bench.architectures import build_architecture
    from bench.conversion import fold_batch_norm
    from bench.spiking.normalization import SyncThresholdDependentBatchNorm, ThresholdDependentBatchNorm

    torch.manual_seed(0)
    ann = build_architecture("cifar_resnet8", 10, image_size=32, in_channels=3).eval()
    for norm in ann.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    images = torch.randn(4, 3, 32, 32)
    plain = fold_batch_norm(ann)(images)
    originals = distributed.synchronize_norms(ann)
    assert originals and not any(type(m) is nn.BatchNorm2d for m in ann.modules())
    assert torch.allclose(fold_batch_norm(ann)(images), plain, atol=1e-5)  # SyncBatchNorm folds too
    distributed.restore_norms(ann, originals)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in ann.modules())

    tdbn = nn.Sequential(ThresholdDependentBatchNorm(3, alpha=0.7, threshold=2.0))
    tdbn[0].weight.data.uniform_(0.5, 1.5)
    tdbn[0].bias.data.uniform_(-1, 1)
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    expected = tdbn(x)
    grads = torch.autograd.grad(expected.square().sum(), (x, tdbn[0].weight, tdbn[0].bias))
    tdbn[0].running_mean.zero_(), tdbn[0].running_var.fill_(1), tdbn[0].num_batches_tracked.zero_()
    originals = distributed.synchronize_norms(tdbn)
    assert isinstance(tdbn[0], SyncThresholdDependentBatchNorm)  # not a plain SyncBatchNorm: the scale stays
    synced = tdbn(x)
    synced_grads = torch.autograd.grad(synced.square().sum(), (x, originals[0][1].weight, originals[0][1].bias))
    assert torch.allclose(synced, expected, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(synced_grads, grads))
    distributed.restore_norms(tdbn, originals)
    assert type(tdbn[0]) is ThresholdDependentBatchNorm
