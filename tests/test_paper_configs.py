"""The paper-scale configs (ResNet-50 on CIFAR-100 and Imagenette) run end to end on a CPU with tiny
overrides: a few dozen images, one epoch, T up to 4. The full runs are for GPUs
(`scripts/gpu_check.sh`); this checks that nothing in them breaks before anyone spends GPU hours."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_datasets import SHARED_DATA, needs_shared_data, write_cifar100

from bench.cli import main
from bench.records import read_records
from bench.studies import device_check

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--quiet",
    "--epochs",
    "1",
    "--set",
    "data.workers=0",
    "--set",
    "data.batch_size=8",
    "--set",
    "data.eval_batch_size=8",
    "--set",
    "eval.time_steps=[1,4]",
    "--device",
    "cpu",
]


def run_config(tmp_path: Path, config: str, data_root: Path, train: int, test: int) -> None:
    args = [
        *TINY,
        "--config",
        str(ROOT / "configs" / config),
        "--data-root",
        str(data_root),
        "--set",
        f"data.train_subset={train}",
        "--set",
        f"data.test_subset={test}",
        "--results-dir",
        str(tmp_path / "results"),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0


def assert_every_row_ran(tmp_path: Path, dataset: str) -> None:
    frame = read_records(tmp_path / "results" / dataset / "records.jsonl")
    assert set(frame["label"]) == {"ann", "direct-T10", "conversion-poisson", "conversion-analog"}
    assert set(frame["status"]) == {"ok"} and set(frame["architecture"]) == {"resnet50"}


def test_cifar100_resnet50_config_end_to_end(tmp_path):
    write_cifar100(tmp_path / "data", train_count=40, test_count=16)
    run_config(tmp_path, "cifar100_resnet50.yaml", tmp_path / "data", train=40, test=16)
    assert_every_row_ran(tmp_path, "cifar100")


@needs_shared_data
def test_imagenette_resnet50_config_end_to_end(tmp_path):
    run_config(tmp_path, "imagenette_resnet50.yaml", SHARED_DATA, train=20, test=10)
    assert_every_row_ran(tmp_path, "imagenette")


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="the GPU check is a bash script")
def test_gpu_check_says_what_it_would_run():
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True, check=True
    )
    install, check = done.stdout.strip().splitlines()
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in install
    assert "-m bench.studies.device_check --data-root device-data --out" in check


@needs_shared_data
def test_device_check_runs_every_stage_on_a_cpu_and_writes_its_summary(tmp_path):
    """`scripts/gpu_check.sh --device cpu --smoke`, as on a device machine but tiny: every stage ok."""
    data = tmp_path / "device-data"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_device_data.py"),
            "--source",
            str(SHARED_DATA),
            "--out",
            str(data),
            "--per-class",
            "3",
        ],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out"
    status = device_check.main(["--device", "cpu", "--smoke", "--data-root", str(data), "--out", str(out)])
    summary = json.loads((out / "device_check.json").read_text())
    assert status == 0, summary
    names = [stage["name"] for stage in summary["stages"]]
    assert len(names) == 6 and all(stage["status"] == "ok" for stage in summary["stages"])
    assert summary["stages"][-1]["result"]["same spikes and gradients"] is True
    assert (out / "device_check.md").read_text().count("| ok |") == 6


def test_device_check_records_a_failed_stage_and_skips_what_the_budget_cannot_hold(tmp_path):
    args = device_check.build_parser().parse_args(["--device", "cpu", "--out", str(tmp_path), "--budget-s", "30"])
    check = device_check.Check(args)
    device_check.run_stage(check, "works", 1, lambda c: {"answer": 42})
    device_check.run_stage(check, "breaks", 1, lambda c: 1 / 0)
    device_check.run_stage(check, "too long", 3600, lambda c: {})
    statuses = [(s["name"], s["status"]) for s in json.loads((tmp_path / "device_check.json").read_text())["stages"]]
    assert statuses == [("works", "ok"), ("breaks", "failed"), ("too long", "skipped")]
    assert "ZeroDivisionError" in (tmp_path / "device_check.md").read_text()
