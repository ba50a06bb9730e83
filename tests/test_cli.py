"""The command line: bad input ends in one clear line and exit status 2; a plugin method reaches the leaderboard."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import read_records

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--quiet",
    "--epochs",
    "1",
    "--set",
    "data.train_subset=64",
    "--set",
    "data.test_subset=32",
    "--set",
    "model.name=cifar_vgg_tiny",
    "--set",
    "eval.time_steps=[1,2,4]",
]


def tiny_args(tmp_path) -> list[str]:
    return TINY + ["--results-dir", str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--dataset", "imagenette", "--data-root", "/nonexistent/spikebench"], "/nonexistent/spikebench"),
        (["--epochs", "-1"], "train.epochs must be 0 or more"),
        (["--config", "/nonexistent/config.yaml"], "does not exist"),
        (["--set", "model.name=nonet"], "nonet"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, tmp_path, capsys):
    assert main(tiny_args(tmp_path) + argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "results").exists()  # refused before any work


def test_run_all_script_exits_with_status_2():
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_all.py"), "--dataset", "nope"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown dataset 'nope'") and "Traceback" not in result.stderr


def test_list_methods(capsys):
    assert main(["--list-methods"]) == 0
    assert "ann" in capsys.readouterr().out


def test_plugin_method_appears_in_the_leaderboard(tmp_path, monkeypatch, capsys):
    """A toy method in a module outside `methods/`, loaded through --plugin, gets its own rows."""
    (tmp_path / "toy_cli_plugin.py").write_text(
        textwrap.dedent('''
        from torch import nn
        from bench.spiking import DirectEncoder, IFNeuron, SpikingNetwork, replace_relus
        from bench.api import register_method

        @register_method("toy_untrained", family="direct", paper="a test")
        def build(context):
            """An untrained network turned spiking."""
            body = context.build_ann()
            replace_relus(body, lambda name: IFNeuron())
            context.notes.update(epochs=0, time_steps_train=0, train_wall_s=0.0)
            return SpikingNetwork(body, DirectEncoder())
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = tiny_args(tmp_path) + ["--plugin", "toy_cli_plugin", "--methods", "ann,toy_untrained"]
    assert main(args) == 0
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    rows = [line for line in leaderboard.splitlines() if line.startswith("| toy_untrained ")]
    assert len(rows) == 3  # accuracy, efficiency and provenance tables
    assert "| ann " in leaderboard and "T=4" in leaderboard
    assert (tmp_path / "results" / "tiny-imagenette" / "accuracy_vs_T.png").is_file()
    # Run again: the finished settings are found in the store and skipped, the leaderboard is unchanged.
    assert main(args) == 0
    assert (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text() == leaderboard


def test_corrupt_checkpoint_is_one_line_and_status_2(tmp_path, capsys):
    args = tiny_args(tmp_path) + ["--methods", "ann"]
    assert main(args) == 0
    (checkpoint,) = (tmp_path / "cache").glob("ann-*.pt")
    checkpoint.write_bytes(b"not a checkpoint")
    assert main(args + ["--rerun"]) == 2
    captured = capsys.readouterr()
    assert "cannot be read" in captured.err and "delete it" in captured.err and captured.err.count("\n") == 1


def test_several_seeds_run_once_each_and_resume(tmp_path, capsys):
    argv = tiny_args(tmp_path) + ["--methods", "ann,direct", "--seeds", "0,1"]
    assert main(argv) == 0
    records = read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")
    assert sorted(records.groupby("seed")["label"].unique().map(sorted).items()) == [
        (0, ["ann", "direct"]),
        (1, ["ann", "direct"]),
    ]
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    direct_row = next(line for line in leaderboard.splitlines() if line.startswith("| direct "))
    assert direct_row.count(" ± ") == 3  # T = 1, 2, 4
    assert main(argv) == 0  # the same command again: every seed's settings are already there
    assert len(read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")) == len(records)
    assert main(tiny_args(tmp_path) + ["--seeds", "0,0"]) == 2
    assert "seed must be an integer or a non-empty list of distinct integers" in capsys.readouterr().err


def test_a_row_capped_by_max_time_steps_is_read_only_up_to_it_and_resumes(tmp_path, capsys):
    config = tmp_path / "capped.yaml"
    config.write_text(
        textwrap.dedent(
            """
            methods:
              - ann
              - {name: direct, max_time_steps: 2, options: {time_steps_train: 2}}
              - conversion
            """
        )
    )
    argv = tiny_args(tmp_path) + ["--config", str(config)]
    assert main(argv) == 0
    store = tmp_path / "results" / "tiny-imagenette" / "records.jsonl"
    records = read_records(store)
    steps = records.groupby("label")["time_steps"].apply(lambda column: sorted(column.astype(int)))
    assert steps["direct"] == [1, 2] and steps["conversion"] == [1, 2, 4]
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    direct_row = next(line for line in leaderboard.splitlines() if line.startswith("| direct "))
    assert direct_row.count("(") == 2  # two Wilson intervals, T = 1 and 2; the T = 4 cell is empty
    assert main(argv) == 0  # its records cover its capped grid: nothing runs again
    assert len(read_records(store)) == len(records)


@pytest.mark.parametrize("cap,message", [(0, "must be at least 1"), ("x", "must be of type int")])
def test_a_bad_max_time_steps_is_one_line(cap, message, tmp_path, capsys):
    config = tmp_path / "capped.yaml"
    config.write_text(f"methods: [{{name: direct, max_time_steps: {cap}}}]\n")
    assert main(tiny_args(tmp_path) + ["--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_a_max_time_steps_below_the_whole_grid_is_refused(tmp_path, capsys):
    config = tmp_path / "capped.yaml"
    config.write_text("eval: {time_steps: [4, 8]}\nmethods: [{name: direct, max_time_steps: 2}]\n")
    assert main(["--quiet", "--config", str(config), "--results-dir", str(tmp_path / "results")]) == 2
    assert "is below every T of eval.time_steps" in capsys.readouterr().err


def test_deterministic_flag_reaches_the_config_and_label_selects_one_row():
    from bench.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--deterministic", "--methods", "conversion"]))
    assert config.deterministic is True
    assert [spec.display_name for spec in config.methods] == ["conversion"]  # not conversion-improved too
    config = config_from_args(build_parser().parse_args(["--methods", "conversion*"]))
    assert [spec.display_name for spec in config.methods] == ["conversion", "conversion-improved"]
    assert config_from_args(build_parser().parse_args([])).deterministic is False
