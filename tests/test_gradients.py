"""The gradient-flow study: flags from known ratios, records written, report rebuilt byte for byte."""

import json
from pathlib import Path

import pytest

from bench.studies import gradients
from bench.studies.gradient_report import DEPTH_PLOT, TIME_PLOT, write_report
from bench.studies.gradients import SurrogateSetting, _summarize, classify, load_study_config, run_study


@pytest.mark.parametrize(
    "ratio,finite,flag",
    [
        (1e3, True, "exploding"),
        (101.0, True, "exploding"),
        (100.0, True, "stable"),
        (1.0, True, "stable"),
        (0.01, True, "stable"),
        (0.009, True, "vanishing"),
        (0.0, True, "vanishing"),
        (None, True, "silent"),
        (float("inf"), True, "exploding"),
        (1.0, False, "exploding"),
        (None, False, "exploding"),
    ],
)
def test_flags_follow_the_documented_thresholds(ratio, finite, flag):
    assert classify(ratio, exploding_ratio=100.0, vanishing_ratio=0.01, finite=finite) == flag


class _Probe:
    layer_order = ["conv1", "conv2", "fc"]
    time_layer = "act1"
    firing_rates = {"act1": 0.2, "act2": 0.0}


def test_the_ratio_is_first_over_last_layer_norm_averaged_over_steps():
    config = load_study_config(None, [])
    layer_norms = [[300.0, 5.0, 1.0], [500.0, 5.0, 3.0]]  # means 400 and 2: ratio 200
    record = _summarize(
        config, SurrogateSetting("rectangular", 4.0), _Probe(), layer_norms, [[1.0, 2.0]] * 2, [2.3, 2.2], 2.1, True
    )
    assert record["ratio"] == pytest.approx(200.0) and record["flag"] == "exploding" and record["status"] == "ok"
    record = _summarize(
        config, SurrogateSetting(), _Probe(), [[1.0, 1.0, 1.0]], [[1.0, 2.0]], [2.3, float("nan")], float("nan"), True
    )
    assert record["status"] == "diverged" and record["loss_after"] is None and record["losses"] == [2.3, None]
    assert record["flag"] == "exploding"
    record = _summarize(config, SurrogateSetting(), _Probe(), [[0.5, 0.1, 0.0]], [[1.0, 2.0]], [2.3], 2.3, True)
    assert record["ratio"] is None and record["flag"] == "silent"  # nothing reached the last layer


def tiny_study(tmp_path, *extra):
    return load_study_config(
        None,
        [
            "model.name=cifar_vgg_tiny",
            "model.width=0.25",
            "data.train_subset=48",
            "data.batch_size=8",
            "steps=2",
            "direct.time_steps_train=2",
            "sweep.shapes=[triangular]",
            "sweep.widths=[0.05,1.0]",
            "sweep.batch_norm=[true]",
            f"results_dir={tmp_path}",
            *extra,
        ],
    )


def test_study_writes_records_and_a_report_that_rebuilds_identically(tmp_path):
    config = tiny_study(tmp_path)
    report = run_study(config)
    study_dir = config.study_dir()
    assert study_dir == tmp_path / "gradients" / "tiny-imagenette-cifar_vgg_tiny" and report == study_dir / "report.md"
    records = [json.loads(line) for line in (study_dir / "records.jsonl").read_text().splitlines()]
    assert [r["setting"] for r in records] == ["triangular w=0.05 h=1 BN on", "triangular w=1 h=1 BN on"]
    for record in records:
        assert record["layers"][0] == "body.features.0" and record["layers"][-1] == "body.fc"
        assert len(record["layer_grad_norms"]) == 2 and len(record["layer_grad_norms"][0]) == len(record["layers"])
        assert len(record["time_grad_norms"][0]) == 2  # one norm per time step
        assert (
            len(record["neuron_layers"]) == 4
            and record["neuron_layers"][0] == record["time_layer"] == "body.features.2"
        )
        assert len(record["firing_rates"]) == 4 and 0 < record["firing_rates"][0] < 1
        assert record["flag"] == classify(record["ratio"], 100.0, 0.01)
    narrow, moderate = records
    assert narrow["ratio"] < moderate["ratio"]  # a narrower surrogate lets less gradient through
    outputs = [study_dir / name for name in ("report.md", DEPTH_PLOT, TIME_PLOT)]
    before = [path.read_bytes() for path in outputs]
    for path in outputs:
        path.unlink()
    write_report(study_dir)
    assert [path.read_bytes() for path in outputs] == before
    text = before[0].decode()
    assert "triangular w=0.05 h=1 BN on" in text and narrow["flag"] in text

    run_study(config)  # finished settings are skipped, not measured again
    assert len((study_dir / "records.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--set", "sweep.shapes=[nope]"], "unknown surrogate shape 'nope'"),
        (["--steps", "0"], "steps must be at least 1"),
        (["--set", "sweep.widths=[-1]"], "positive"),
        (["--set", "nope=1"], "unknown key 'nope'"),
        (["--arch", "nonet", "--set", "results_dir=RESULTS"], "unknown architecture 'nonet'"),
    ],
)
def test_mistakes_end_as_one_line_and_status_2(argv, message, tmp_path, capsys):
    assert gradients.main([arg.replace("RESULTS", str(tmp_path)) for arg in argv]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def test_report_only_without_records_is_a_user_error(tmp_path, capsys):
    assert gradients.main(["--report-only", "--set", f"results_dir={tmp_path}"]) == 2
    assert "run python -m bench.studies.gradients first" in capsys.readouterr().err


def test_the_shipped_study_config_sweeps_a_deep_network():
    config = load_study_config(Path(__file__).resolve().parents[1] / "configs" / "gradients.yaml")
    labels = [setting.label for setting in config.all_settings()]
    assert config.model.name == "cifar_resnet20" and len(labels) == len(set(labels)) >= 20
    assert {"triangular w=0.05 h=1 BN on", "triangular w=1 h=1 BN on", "rectangular w=4 h=1 BN on"} <= set(labels)
