"""Leaderboards: generated from records alone, byte-identical when rebuilt, measured and reported apart."""

import json
import subprocess

import pandas as pd
import pytest

from bench.config import load_config
from bench.records import append_records, git_commit, read_records
from bench.report import (
    latency_to,
    latest_rows,
    main,
    rebuild_all,
    reported_dataset,
    shipped_config_command,
    wall_time_total,
    write_leaderboard,
)


def record(label, family, t, top1, run="20260101T000000Z-aaaaaa", **extra):
    return {
        "dataset": "cifar100",
        "label": label,
        "method": label,
        "family": family,
        "architecture": "cifar_resnet8",
        "time_steps": t,
        "top1": top1,
        "top5": min(1.0, top1 + 0.2),
        "status": "ok",
        "run_id": run,
        "setting": "",
        "spikes_per_neuron": 0.1 * t,
        "sops_per_sample": 1e6 * t,
        "macs_per_sample": 1e5 * t,
        "energy_uj": 1.0 * t,
        "ann_energy_uj": 50.0,
        "firing_rates": {"act1": 0.1, "layer1.act": 0.2},
        "epochs": 2,
        "time_steps_train": 4,
        "train_wall_s": 12.0,
        "eval_wall_s": 3.0,
        "commit": "abc123",
        "hardware": "cpu",
        "device": "cpu",
        "train_size": 100,
        "test_size": 50,
        "seed": 0,
        "versions": {"torch": "2"},
        "setting_hash": label,
        **extra,
    }


def write_store(folder):
    rows = [record("ann", "reference", t, 0.60, energy_uj=50.0, sops_per_sample=0.0) for t in (1, 10, 100)]
    rows += [record("direct", "direct", t, acc) for t, acc in ((1, 0.30), (10, 0.58), (100, 0.595))]
    rows += [record("conversion", "conversion", t, acc) for t, acc in ((1, 0.01), (10, 0.2), (100, 0.59))]
    rows.append(
        {
            **record("broken", "direct", 1, 0.0),
            "time_steps": None,
            "top1": None,
            "status": "failed",
            "error": "loss became nan",
        }
    )
    append_records(folder / "records.jsonl", rows)


def test_leaderboard_is_byte_identical_when_rebuilt(tmp_path):
    folder = tmp_path / "cifar100"
    write_store(folder)
    first = write_leaderboard(folder, at=10).read_bytes()
    plots = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    assert set(plots) == {"accuracy_vs_T.png", "accuracy_vs_energy.png", "firing_rates.png"}
    assert write_leaderboard(folder, at=10).read_bytes() == first
    assert {p.name: p.read_bytes() for p in folder.glob("*.png")} == plots
    text = first.decode()
    assert "| direct " in text and "30.00" in text and "59.50" in text
    assert "failed: loss became nan" in text
    reported = text.split("## Reported in papers, not measured here")[1].split("## How it was produced")[0]
    reported_rows = [line for line in reported.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| QCFS ") for line in reported_rows)
    assert not any(line.startswith(("| direct ", "| conversion ", "| ann ")) for line in reported_rows)  # never mixed


def test_latency_to_fraction_of_ann():
    group = pd.DataFrame({"time_steps": [1, 10, 100], "top1": [0.3, 0.58, 0.595]})
    assert latency_to(group, 0.9 * 0.6) == "10"
    assert latency_to(group, 0.99 * 0.6) == "100"
    assert latency_to(group, 0.61) == "not reached"


def test_efficiency_columns_and_sorting(tmp_path):
    folder = tmp_path / "cifar100"
    write_store(folder)
    text = write_leaderboard(folder, at=10, sort="energy").read_text()
    section = text.split("## Latency and efficiency at T = 10")[1].split("##")[0]
    direct_row = next(line for line in section.splitlines() if line.startswith("| direct "))
    cells = [cell.strip() for cell in direct_row.strip("|").split("|")]
    # method, T, top-1, T@90%, T@95%, T@99%, spikes/neuron, SOPs (M), MACs (M), energy, energy/ANN, ...
    assert cells[:11] == [
        "direct",
        "10",
        "58.00 (44.23–70.62)",
        "10",
        "10",
        "100",
        "1.000",
        "10",
        "1",
        "10.00",
        "0.200",
    ]
    assert section.index("| ann ") > section.index("| direct ")  # sorted by energy, lowest first
    text = write_leaderboard(folder, at=10, sort="method").read_text()
    section = text.split("## Latency and efficiency at T = 10")[1].split("##")[0]
    assert section.index("| ann ") < section.index("| direct ")
    conversion_row = next(line for line in section.splitlines() if line.startswith("| conversion "))
    assert "not reached" not in conversion_row.split("|")[4]


def test_newest_run_wins_and_index_lists_leaderboards(tmp_path):
    folder = tmp_path / "cifar100"
    write_store(folder)
    append_records(
        folder / "records.jsonl",
        [record("direct", "direct", t, 0.5, run="20270101T000000Z-bbbbbb") for t in (1, 10, 100)],
    )
    paths = rebuild_all(tmp_path, at=10)
    text = (folder / "leaderboard.md").read_text()
    assert "50.00" in text and "58.00" not in text
    index = (tmp_path / "README.md").read_text()
    assert tmp_path / "README.md" in paths and paths[-1] == tmp_path / "claims.md"
    assert "[cifar100](cifar100/leaderboard.md)" in index and "60.00" in index


def test_report_command_errors_are_one_line(tmp_path, capsys):
    assert main(["--results-dir", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    write_store(tmp_path / "cifar100")
    assert main(["--results-dir", str(tmp_path), "--sort", "nope"]) == 2


def test_corrupt_store_line_is_a_user_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n{not json\n")
    try:
        read_records(path)
    except Exception as error:  # noqa: BLE001
        assert type(error).__name__ == "UserError" and "line 2" in str(error)
    else:
        raise AssertionError("a corrupt line must be refused")


def test_reported_dataset_names():
    assert reported_dataset("tiny-imagenette") == "imagenette"
    assert reported_dataset("imagenette-320") == "imagenette"
    assert reported_dataset("cifar100") == "cifar100"
    assert reported_dataset("folder:../shared/data/cifar10-jpeg/") == "cifar10"


def test_several_seeds_show_mean_and_sample_spread(tmp_path):
    folder = tmp_path / "cifar100"
    write_store(folder)  # seed 0: direct 30.0, 58.0, 59.5
    later = [
        record(
            "direct",
            "direct",
            t,
            acc,
            run=f"2027010{seed}T000000Z-cccccc",
            seed=seed,
            firing_rates={"act1": 0.1 * seed - 0.05, "layer1.act": 0.2},
        )
        for seed, accuracies in ((1, (0.40, 0.60, 0.60)), (2, (0.50, 0.62, 0.605)))
        for t, acc in zip((1, 10, 100), accuracies)
    ]
    later.append(
        {
            **record("direct", "direct", 1, 0.0, run="20270103T000000Z-dddddd", seed=3),
            "time_steps": None,
            "top1": None,
            "status": "failed",
            "error": "loss became nan",
        }
    )  # a failed seed is left out
    append_records(folder / "records.jsonl", later)
    rows = latest_rows(read_records(folder / "records.jsonl"))
    direct = rows[rows["label"] == "direct"].set_index("time_steps")
    assert list(direct["seeds"]) == [3, 3, 3] and direct.loc[1, "seed"] == "0, 1, 2"
    assert abs(direct.loc[1, "top1"] - 0.40) < 1e-12 and abs(direct.loc[1, "top1_std"] - 0.10) < 1e-12  # 30, 40, 50
    assert abs(direct.loc[1, "sops_per_sample"] - 1e6) < 1e-6  # every other number is the mean too
    assert direct.loc[1, "firing_rates"] == pytest.approx({"act1": 0.1, "layer1.act": 0.2})  # (0.1 + 0.05 + 0.15) / 3
    text = write_leaderboard(folder, at=10).read_text()
    direct_row = next(line for line in text.splitlines() if line.startswith("| direct "))
    assert "40.00 ± 10.00" in direct_row and "60.00 ± 2.00" in direct_row
    assert "| ann " in text and "60.00 ±" not in text.split("| ann ")[1].splitlines()[0]  # one seed: no spread
    assert "mean ± the sample standard deviation" in text and "seeds 0; 0, 1, 2" in text


def test_commit_is_dirty_for_changed_code_but_not_for_changed_results(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "records.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "start")
    clean = git_commit(tmp_path)
    assert len(clean) == 12 and "+dirty" not in clean
    (tmp_path / "results" / "records.jsonl").write_text("{}\n{}\n")  # a run appended records
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "+dirty"


def test_a_network_whose_last_layer_never_fires_is_flagged_silent():
    import pandas as pd

    from bench.report import silent_settings

    rows = pd.DataFrame(
        [
            {
                "label": "quiet",
                "architecture": "a",
                "family": "direct",
                "status": "ok",
                "time_steps": t,
                "firing_rates": {"first": 0.1, "last": 0.0},
            }
            for t in (1, 4)
        ]
        + [
            {
                "label": "busy",
                "architecture": "a",
                "family": "direct",
                "status": "ok",
                "time_steps": t,
                "firing_rates": {"first": 0.1, "last": 0.02},
            }
            for t in (1, 4)
        ]
    )
    assert silent_settings(rows) == ["quiet"]


def test_wall_time_total_counts_a_shared_network_once_and_every_simulation():
    # Every setting is read at two T; `conversion` starts from the `ann` network.
    rows = pd.DataFrame(
        [record("ann", "reference", t, 0.9, train_wall_s=3600.0, eval_wall_s=36.0) for t in (1, 4)]
        + [record("conversion", "conversion", t, 0.5, train_wall_s=3600.0, eval_wall_s=720.0) for t in (1, 4)]
        + [record("direct", "direct", t, 0.6, train_wall_s=1800.0, eval_wall_s=144.0) for t in (1, 4)]
    )
    assert wall_time_total(rows) == (
        "Wall time of all rows: training 1.50 h (a network that several rows start from counted once), "
        "simulation 0.25 h, on the hardware each row names."
    )


def test_a_leaderboard_names_the_shipped_config_whose_settings_its_records_hash_to():
    default = load_config("default").section_hash("data", "model", "train", "eval")
    rows = pd.DataFrame([record("ann", "reference", 1, 0.5, config_hash=default)])
    assert "`python run_all.py --config configs/default.yaml`" in shipped_config_command(rows)
    assert shipped_config_command(pd.DataFrame([record("ann", "reference", 1, 0.5, config_hash="0")])) is None


def test_the_provenance_names_the_last_training_epochs_loss_and_accuracy(tmp_path):
    history = {"train_history": [[1, 2.25, 0.125], [2, 1.25, 0.5372]]}
    rows = [record("direct", "direct", t, 0.5, notes=history) for t in (1, 4)]
    rows += [record("conversion", "conversion", t, 0.4, notes={}) for t in (1, 4)]
    append_records(tmp_path / "records.jsonl", rows)
    lines = write_leaderboard(tmp_path).read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method") and "setting hash" in line)
    column = [cell.strip() for cell in header.split("|")].index("last epoch: train loss / top-1 (%)")
    cells = {
        line.split("|")[1].strip(): line.split("|")[column].strip()
        for line in lines[lines.index(header) + 2 :]
        if line.startswith("| ")
    }
    assert cells == {"direct": "1.250 / 53.7", "conversion": ""}
