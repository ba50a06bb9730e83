"""Every failure a user can cause ends in one line and exit status 2 with nothing changed; records
and checkpoints survive torn appends, kills, concurrent runs and unsafe files."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from bench.cli import main
from bench.config import TrainConfig
from bench.errors import UserError
from bench.records import finished_settings, read_records, set_aside_torn_tail
from bench.report import energy_caveat
from bench.report import main as report_main
from bench.training import TrainingDiverged, _resume, _save, fit

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--quiet",
    "--epochs",
    "1",
    "--set",
    "data.train_subset=64",
    "--set",
    "data.test_subset=20",
    "--set",
    "model.width=0.25",
    "--set",
    "eval.time_steps=[1,4]",
]


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, "--results-dir", str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_refusal(capsys, status: int) -> str:
    error = capsys.readouterr().err.strip()
    assert status == 2, error
    assert len(error.splitlines()) == 1 and error.startswith("error: ") and "Traceback" not in error, error
    return error


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--seeds", "-1"], "seeds must be in 0 .. 2**63 - 1"),
        (["--seeds", str(2**64)], "seeds must be in 0 .. 2**63 - 1"),
        (["--methods", ""], "selects no method"),
        (["--methods", ","], "selects no method"),
        (["--set", "eval.time_steps=[1000000000]"], "above the maximum of 100000 steps"),
    ],
)
def test_bad_flags_are_refused_before_any_work(tmp_path, capsys, extra, expected):
    status = main(tiny_args(tmp_path, *extra))
    assert expected in assert_one_line_refusal(capsys, status)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_results_dir_that_is_a_file_and_a_config_that_is_not_utf8(tmp_path, capsys):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder")
    assert "is a file" in assert_one_line_refusal(capsys, main([*TINY, "--results-dir", str(afile)]))
    config = tmp_path / "latin1.yaml"
    config.write_bytes("data:\n  name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in assert_one_line_refusal(capsys, main(["--config", str(config), "--quiet"]))
    assert afile.read_text() == "not a folder"


def test_report_at_a_t_off_the_grid_is_refused(capsys):
    before = snapshot(ROOT / "results" / "tiny-imagenette")
    status = report_main(["--results-dir", str(ROOT / "results"), "--at", "33"])
    assert "--at 33 is not a T of" in assert_one_line_refusal(capsys, status)
    assert snapshot(ROOT / "results" / "tiny-imagenette") == before


def test_records_that_are_json_but_not_objects_are_refused(tmp_path):
    store = tmp_path / "records.jsonl"
    store.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match="line 2 is JSON but not a record"):
        read_records(store)


def test_a_torn_last_line_is_set_aside_and_a_partial_grid_is_not_finished(tmp_path):
    store = tmp_path / "records.jsonl"
    whole = [{"setting_hash": "a", "status": "ok", "time_steps": t} for t in (1, 4)]
    partial = [{"setting_hash": "b", "status": "ok", "time_steps": 1}]
    text = "".join(json.dumps(r) + "\n" for r in whole + partial) + '{"setting_hash": "b", "sta'
    store.write_text(text)
    assert len(read_records(store)) == 3  # the torn line is left out, not an error
    assert finished_settings(store, [1, 4]) == {"a": "ok"}
    assert "interrupted append" in set_aside_torn_tail(store)
    assert store.read_text().endswith("\n") and len(store.read_text().splitlines()) == 3
    assert (tmp_path / "records.jsonl.torn").read_text() == '{"setting_hash": "b", "sta\n'
    assert set_aside_torn_tail(store) is None


def test_a_torn_run_reruns_only_its_setting(tmp_path, capsys):
    assert main(tiny_args(tmp_path, "--methods", "ann,conversion")) == 0
    store = tmp_path / "results" / "tiny-imagenette" / "records.jsonl"
    lines = store.read_text().splitlines()
    ann = [line for line in lines if '"label": "ann"' in line]
    conversion = [line for line in lines if '"label": "conversion"' in line]
    store.write_text("\n".join(conversion + ann[:1]) + "\n" + ann[1][: len(ann[1]) // 2])  # torn in ann's 2nd
    capsys.readouterr()
    assert main(tiny_args(tmp_path, "--methods", "ann,conversion")) == 0
    assert "interrupted append" in capsys.readouterr().err  # said even with --quiet
    frame = read_records(store)
    assert (frame["label"] == "conversion").sum() == 2  # not run again
    assert sorted(frame.loc[frame["label"] == "ann", "time_steps"]) == [1, 1, 4]  # ann ran again, once
    assert (store.parent / "records.jsonl.torn").is_file()


class _RunsCode:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["SPIKEBENCH_TEST_MARKER"]), "ran"))


def test_unsafe_foreign_and_mismatched_checkpoints_are_refused(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    marker = tmp_path / "marker"
    monkeypatch.setenv("SPIKEBENCH_TEST_MARKER", str(marker))
    malicious = tmp_path / "malicious.pt"
    malicious.write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=2))
    with pytest.raises(UserError, match="cannot be read safely"):
        _resume(malicious, model, optimizer, schedule, None)
    assert not marker.exists()
    foreign = tmp_path / "foreign.pt"
    torch.save([1, 2, 3], foreign)
    with pytest.raises(UserError, match="not a spikebench checkpoint"):
        _resume(foreign, model, optimizer, schedule, None)
    other = tmp_path / "other.pt"
    bigger = nn.Linear(5, 2)
    big_optimizer = torch.optim.SGD(bigger.parameters(), lr=0.1)
    _save(other, bigger, big_optimizer, torch.optim.lr_scheduler.LambdaLR(big_optimizer, lambda s: 1.0), 1, 0.0, None)
    with pytest.raises(UserError, match="does not fit this network") as refused:
        _resume(other, model, optimizer, schedule, None)
    # model is nn.Linear(3, 2): the saved (5 -> 2) weight is named with both shapes, on one line
    assert r"1 of another shape, such as weight ([2, 5] saved, [2, 3] here)" in str(refused.value)
    assert "\n" not in str(refused.value)
    renamed = tmp_path / "renamed.pt"
    other_state = torch.load(other, weights_only=True)
    other_state["model"] = {"layer.weight": torch.zeros(2, 3), "bias": torch.zeros(2)}
    torch.save(other_state, renamed)
    with pytest.raises(UserError, match="1 weights missing, such as weight, 1 unknown, such as layer.weight"):
        _resume(renamed, model, optimizer, schedule, None)


def test_weights_that_become_non_finite_behind_a_finite_loss_are_a_divergence():
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 1e-5)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.ones(1, 1), torch.zeros(1, dtype=torch.long))
    )
    train = TrainConfig(epochs=1, lr=10.0, momentum=0.0, weight_decay=0.0, schedule="constant")

    def huge_gradient(outputs, labels):
        return (outputs * 3e38).sum()  # finite (3e33), its step is not

    with pytest.raises(TrainingDiverged, match="non-finite"):
        fit(model, model, loader, train, torch.device("cpu"), loss=huge_gradient)


def test_energy_caption_names_the_configured_prices():
    default = pd.DataFrame({"pj_per_mac": [4.6], "pj_per_ac": [0.9]})
    assert "4.6 pJ/MAC, 0.9 pJ/AC, Horowitz 2014" in energy_caveat(default)
    assert "1 pJ/MAC, 0.1 pJ/AC, as configured" in energy_caveat(
        pd.DataFrame({"pj_per_mac": [1.0], "pj_per_ac": [0.1]})
    )


PLUGIN = '''
from torch import nn
from bench.api import register_method

@register_method("returns_plain_module", family="direct")
def build(context):
    """Forgets the contract."""
    return nn.Linear(1, 1)

@register_method("raises_inside", family="direct")
def build_raising(context):
    """A bug inside a method."""
    raise ZeroDivisionError("oops")
'''


def test_a_failing_method_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_methods.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    args = tiny_args(tmp_path, "--plugin", "broken_methods", "--methods", "returns_plain_module,raises_inside,ann")
    assert main(args) == 0
    said = capsys.readouterr().err  # even with --quiet, one line per failed method
    assert "returns_plain_module failed: its build returned" in said and "raises_inside failed: " in said
    frame = read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")
    errors = dict(zip(frame["label"], frame["error"].fillna("")))
    assert "not a bench.spiking.SpikingModel" in errors["returns_plain_module"]
    assert "ZeroDivisionError: oops" in errors["raises_inside"]
    assert set(frame.loc[frame["label"] == "ann", "status"]) == {"ok"}
    assert main(args) == 0  # failed settings are not retried without --rerun
    assert len(read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")) == len(frame)


def test_every_method_diverging_is_recorded_and_the_leaderboard_says_so(tmp_path):
    """`train.lr=.inf`: no row finishes; each failure is a record and the leaderboard still renders."""
    args = tiny_args(tmp_path, "--methods", "ann,direct", "--set", "train.lr=.inf")
    assert main(args) == 0
    frame = read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")
    assert set(frame["status"]) == {"failed"} and set(frame["label"]) == {"ann", "direct"}
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    assert "| ann " in leaderboard and "failed: weights of" in leaderboard and "| result " in leaderboard


def test_an_immutable_records_file_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    """chattr +i: even root cannot append (chmod would not stop root, which CI runs as)."""
    store = tmp_path / "results" / "tiny-imagenette" / "records.jsonl"
    store.parent.mkdir(parents=True)
    store.write_text("")
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        error = assert_one_line_refusal(capsys, main(tiny_args(tmp_path, "--methods", "ann")))
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    assert f"cannot write records to {store}" in error and "chattr -i" in error
    assert not (tmp_path / "cache").exists()  # refused before any training


def run_cli(tmp_path: Path, name: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [
        sys.executable,
        str(ROOT / "run_all.py"),
        *TINY,
        "--methods",
        "ann",
        "--epochs",
        "2",
        "--results-dir",
        str(tmp_path / name / "results"),
        "--set",
        f"cache_dir={tmp_path / name / 'cache'}",
        *extra,
    ]
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal
import bench.training as training

_save = training._save

def save_then_die(*args, **kwargs):
    _save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

training._save = save_then_die
"""


def comparable(records: pd.DataFrame) -> list[dict]:
    kept = ["label", "time_steps", "top1", "spikes_per_neuron", "sops_per_sample", "macs_per_sample", "epochs"]
    return records[kept].to_dict("records")


def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_result(tmp_path):
    (tmp_path / "kill_plugin.py").write_text(KILL_AFTER_FIRST_CHECKPOINT)
    whole = run_cli(tmp_path, "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed = run_cli(tmp_path, "resumed", "--plugin", "kill_plugin", env={"PYTHONPATH": str(tmp_path)})
    assert killed.wait(timeout=300) == -9
    resumed = run_cli(tmp_path, "resumed")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    stores = [
        read_records(tmp_path / name / "results" / "tiny-imagenette" / "records.jsonl") for name in ("whole", "resumed")
    ]
    assert comparable(stores[0]) == comparable(stores[1])
    # The training history survives the kill: both epochs, as the uninterrupted run saw them.
    histories = [store["notes"].iloc[0]["train_history"] for store in stores]
    assert [epoch for epoch, _, _ in histories[1]] == [1, 2] and histories[0] == histories[1]
    checkpoints = [next((tmp_path / name / "cache").glob("ann-*.pt")) for name in ("whole", "resumed")]
    weights = [torch.load(path, weights_only=True)["model"] for path in checkpoints]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


KILL_AFTER_FIRST_PARTIAL_CURVE = """
import os, signal
from bench.harness import PartialCurve

_save = PartialCurve.save

def save_then_die(self, *args, **kwargs):
    _save(self, *args, **kwargs)
    if self.path.name.startswith("conversion"):
        os.kill(os.getpid(), signal.SIGKILL)

PartialCurve.due = lambda self, every_s: True  # save after every batch
PartialCurve.save = save_then_die
"""


def test_a_run_killed_in_the_middle_of_a_curve_resumes_it_to_the_uninterrupted_result(tmp_path):
    (tmp_path / "kill_curve.py").write_text(KILL_AFTER_FIRST_PARTIAL_CURVE)
    extra = ["--methods", "ann,conversion", "--set", "data.eval_batch_size=8"]  # 20 test images: 3 batches
    whole = run_cli(tmp_path, "whole", *extra)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed = run_cli(tmp_path, "resumed", *extra, "--plugin", "kill_curve", env={"PYTHONPATH": str(tmp_path)})
    assert killed.wait(timeout=300) == -9
    curves = tmp_path / "resumed" / "cache" / "curves"
    assert [path.name.split("-")[0] for path in curves.iterdir()] == ["conversion"]
    resumed = run_cli(tmp_path, "resumed", *extra)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    stores = [
        read_records(tmp_path / name / "results" / "tiny-imagenette" / "records.jsonl") for name in ("whole", "resumed")
    ]
    assert comparable(stores[0]) == comparable(stores[1])
    assert not any(curves.iterdir())  # a finished curve leaves no partial one behind


def test_two_identical_runs_at_once_write_each_record_once(tmp_path):
    shared = ["--results-dir", str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}"]
    command = [sys.executable, str(ROOT / "run_all.py"), *TINY, "--methods", "ann,conversion", *shared]
    runs = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    frame = read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")
    assert sorted(zip(frame["label"], frame["time_steps"])) == [
        ("ann", 1),
        ("ann", 4),
        ("conversion", 1),
        ("conversion", 4),
    ]


def test_folder_data_with_a_damaged_image_or_one_class_is_refused_up_front(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import bench.data.datasets as datasets

    monkeypatch.setattr(datasets, "CHECKED_DIR", tmp_path / "checked")
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for index in range(3):
                Image.new("RGB", (8, 8), (index * 40, 10, 10)).save(folder / f"{index}.jpg")
    whole = (tmp_path / "images" / "train" / "dog" / "2.jpg").read_bytes()
    (tmp_path / "images" / "train" / "dog" / "2.jpg").write_bytes(whole[: len(whole) // 2])  # truncated
    args = tiny_args(tmp_path, "--dataset", f"folder:{tmp_path / 'images'}", "--methods", "ann")
    error = assert_one_line_refusal(capsys, main(args))
    assert "1 of 12 images cannot be decoded" in error and "2.jpg" in error
    assert not (tmp_path / "results").exists()
    (tmp_path / "images" / "train" / "dog" / "2.jpg").write_bytes(whole)
    for split in ("train", "val"):
        for file in (tmp_path / "images" / split / "dog").iterdir():
            file.unlink()
        (tmp_path / "images" / split / "dog").rmdir()
    error = assert_one_line_refusal(capsys, main(args))
    assert "at least two" in error


@pytest.mark.parametrize("where", ["checkpoint", "records", "leaderboard"])
def test_a_full_disk_is_one_line_and_damages_nothing_written_before(tmp_path, monkeypatch, capsys, where):
    import errno

    import bench.records
    import bench.report
    import bench.training

    assert main(tiny_args(tmp_path, "--methods", "ann")) == 0
    before = snapshot(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {
        "checkpoint": (bench.training.torch, "save"),
        "records": (bench.records.os, "fsync"),
        "leaderboard": (bench.report, "plot_accuracy"),
    }[where]
    monkeypatch.setattr(*target, full)
    status = main(tiny_args(tmp_path, "--methods", "ann,direct", "--rerun"))
    error = assert_one_line_refusal(capsys, status)
    assert "No space left on device" in error or "free space" in error
    after = snapshot(tmp_path)
    for name, content in before.items():
        if name.endswith("records.jsonl"):
            assert after[name].startswith(content), name  # appended to at most, never damaged
        elif name.endswith(".pt"):
            assert after[name] == content, name


@pytest.fixture
def tiny_disk(tmp_path):
    """A real file system (tmpfs) with 16 KiB free, where this machine lets the test mount one (root on Linux)."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux); the monkeypatched full-disk test covers it")
    try:
        (mount / "filler").write_bytes(b"\0" * (shutil.disk_usage(mount).free - 16 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("full", ["cache", "results"])
def test_a_real_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, tiny_disk, capsys, full):
    """On a disk with 16 KiB free the checkpoint (cache) or the plots (results) do not fit: one line that
    says the device is full and how much to free; the records written before are whole."""
    folders = {"cache": tmp_path / "cache", "results": tmp_path / "results"}
    folders[full] = tiny_disk / full
    args = [*TINY, "--methods", "ann", "--results-dir", str(folders["results"])]
    error = assert_one_line_refusal(capsys, main([*args, "--set", f"cache_dir={folders['cache']}"]))
    assert "no space left on" in error.lower(), error
    assert str(tiny_disk) in error, error  # names the folder to free space in
    if full == "results":  # the records fit before the plots did not: they are complete and readable
        records = read_records(folders["results"] / "tiny-imagenette" / "records.jsonl")
        assert sorted(records["time_steps"].astype(int)) == [1, 4]


def test_a_checkpoint_restores_the_poisson_encoder_draws(tmp_path):
    from bench.spiking import PoissonEncoder

    model = nn.Sequential(PoissonEncoder(seed=3))
    encoder = model[0]
    images = torch.rand(2, 3)
    encoder(images, 2)  # the generator has advanced
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    _save(tmp_path / "c.pt", model, optimizer, schedule, 1, 0.0, None)
    expected = encoder(images, 5)
    fresh = nn.Sequential(PoissonEncoder(seed=3))
    _resume(tmp_path / "c.pt", fresh, optimizer, schedule, None)
    assert torch.equal(fresh[0](images, 5), expected)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("def broken(:\n", "failed on import: SyntaxError"),
        ("raise RuntimeError('no GPU here')\n", "failed on import: RuntimeError: no GPU here"),
        (
            "from bench.api import register_method\n\n"
            "@register_method('ann', family='reference')\ndef build(context):\n    pass\n",
            "method 'ann' is already registered (by methods.ann:build_ann_reference)",
        ),
    ],
)
def test_a_broken_plugin_is_one_line(tmp_path, monkeypatch, capsys, source, expected):
    (tmp_path / "broken_plugin_module.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_plugin_module", raising=False)
    status = main(tiny_args(tmp_path, "--plugin", "broken_plugin_module"))
    assert expected in assert_one_line_refusal(capsys, status)
    assert not (tmp_path / "results").exists()


def test_a_checkpoint_with_more_gpu_states_than_this_machine_has_gpus_resumes(monkeypatch):
    """Eight CUDA generator states written, one device here: the first is restored, no IndexError."""
    from bench.checkpoints import random_states, restore_random_states

    states = random_states(None, torch.nn.Linear(1, 1))
    states["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state[0].item())))
    restore_random_states(states, None, torch.nn.Linear(1, 1))
    assert restored == [(0, 0)]
