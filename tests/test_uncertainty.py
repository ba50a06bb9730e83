"""Uncertainty: Wilson intervals, the exact McNemar test, per-image records, paired marks, verdicts."""

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bench.cli import main, print_summary
from bench.config import load_config
from bench.records import append_records, latest_rows, read_records
from bench.reference import resolve_reference_dir, verdicts
from bench.report import paired_marks, write_leaderboard
from bench.stats import discordant, mcnemar_exact, pack_bits, unpack_bits, wilson_interval
from tests.test_cli import tiny_args
from tests.test_report import record


def test_wilson_interval_by_hand():
    # 5 of 10: centre (0.5 + z^2/20) / (1 + z^2/10) = 0.5; half-width z sqrt(0.025 + z^2/400) / (1 + z^2/10)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    # 0 of 10: the interval starts at 0 and ends at z^2/10 / (1 + z^2/10) = 0.2775
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)  # 2 * (1 + 10) / 2^10
    assert mcnemar_exact(3, 3) == 1.0  # 2 * 42/64 > 1, capped
    assert mcnemar_exact(0, 0) == 1.0
    first = np.array([1, 1, 0, 0, 1], dtype=bool)
    second = np.array([1, 0, 1, 0, 0], dtype=bool)
    assert discordant(first, second) == (2, 1)


def test_bits_round_trip_and_refuse_the_wrong_count():
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    assert pack_bits(bits) == "b080"  # 1011 0000, then 1 padded with zeros
    assert (unpack_bits("b080", 9) == bits).all()
    with pytest.raises(ValueError):
        unpack_bits("b080", 17)
    with pytest.raises(ValueError):
        unpack_bits("b080", 8)


def with_bits(label, family, t, correct, **extra):
    correct = np.asarray(correct, dtype=bool)
    return record(label, family, t, correct.mean(), correct_bits=pack_bits(correct), test_size=len(correct), **extra)


def test_paired_marks_bold_the_best_and_star_only_significant_gaps(tmp_path):
    n = 40
    best = np.ones(n, dtype=bool)
    best[:4] = False  # 36 of 40
    close = best.copy()
    close[4:6] = False  # 34 of 40: 2 discordant images, p = 0.5
    far = best.copy()
    far[4:14] = False  # 26 of 40: 10 discordant images all one way, p = 2 / 2^10
    rows = [
        with_bits("ann", "reference", 1, np.ones(n)),
        with_bits("direct", "direct", 1, best),
        with_bits("tet", "direct", 1, close),
        with_bits("conversion", "conversion", 1, far),
    ]
    append_records(tmp_path / "set" / "records.jsonl", rows)
    table = latest_rows(read_records(tmp_path / "set" / "records.jsonl"))
    assert paired_marks(table) == {
        ("direct", "cifar_resnet8", 1): "best",
        ("conversion", "cifar_resnet8", 1): "worse",
    }  # the ANN is not a contender; `tet` is not distinguishable from the best
    text = write_leaderboard(tmp_path / "set").read_text()
    accuracy = text.split("Top-5 accuracy")[0]  # the top-1 table comes first
    line = {row.split("|")[1].strip(): row for row in accuracy.splitlines() if row.startswith("| ")}
    assert "**90.00 (76.95–96.04)**" in line["direct"]
    assert "65.00 (49.51–77.87) \\*" in line["conversion"] and "\\*" not in line["tet"]
    assert "exact McNemar test" in text


def test_records_keep_per_image_correctness_that_reads_back_to_the_accuracy(tmp_path, capsys):
    argv = tiny_args(tmp_path) + ["--methods", "ann,direct,conversion", "--reference-dir", ""]
    assert main(argv) == 0
    records = read_records(tmp_path / "results" / "tiny-imagenette" / "records.jsonl")
    assert len(records) == 9 and records["correct_bits"].notna().all()
    for _, row in records.iterrows():
        correct = unpack_bits(row["correct_bits"], int(row["test_size"]))
        assert int(correct.sum()) == round(row["top1"] * row["test_size"])
    # the terminal summary keeps to 80 columns: one line per row, no wrapped cell
    overrides = [f"results_dir={tmp_path / 'results'}", "eval.time_steps=[1,2,4]", "model.name=cifar_vgg_tiny"]
    config = load_config("default", overrides)
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(console, config, tmp_path / "leaderboard.md")
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    assert sum(line.lstrip().startswith(("ann ", "direct ", "conversion ")) for line in lines) == 3


def rows_of(records):
    return latest_rows(pd.DataFrame(records))


def test_a_run_within_the_reference_spread_is_reproduced_and_one_beyond_it_is_not(tmp_path):
    reference = [
        record("direct", "direct", t, acc, run=f"2026010{seed}T000000Z-r", seed=seed, reference_key="k", test_size=500)
        for seed, accuracies in ((0, (0.40, 0.60)), (1, (0.42, 0.62)), (2, (0.44, 0.61)))
        for t, acc in zip((1, 10), accuracies)
    ]
    append_records(tmp_path / "results" / "set" / "records.jsonl", reference)
    near = rows_of(
        [record("direct", "direct", t, acc, reference_key="k", test_size=500) for t, acc in ((1, 0.45), (10, 0.60))]
    )
    # sigma at T=1: max(seed std 0.02, sqrt(0.45 * 0.55 / 500) = 0.0222); z for 2 values of T: 2.2414;
    # allowed 2.2414 * 0.0222 * sqrt(1 + 1/3) = 0.0576 > the gap 0.45 - 0.42 = 0.03
    (verdict,) = verdicts(near, tmp_path / "results")
    assert verdict.reproduced and verdict.time_steps == 1
    assert verdict.allowed == pytest.approx(2.2414 * (0.45 * 0.55 / 500) ** 0.5 * (4 / 3) ** 0.5, rel=1e-3)
    far = rows_of(
        [record("direct", "direct", t, acc, reference_key="k", test_size=500) for t, acc in ((1, 0.42), (10, 0.50))]
    )
    (verdict,) = verdicts(far, tmp_path / "results")
    assert not verdict.reproduced and verdict.time_steps == 10 and verdict.gap == pytest.approx(-0.11)
    other = rows_of([record("direct", "direct", 1, 0.45, reference_key="other", test_size=500)])
    assert verdicts(other, tmp_path / "results") == []  # another setting has no reference


def test_a_run_published_into_the_references_is_not_compared_with_them(tmp_path):
    (tmp_path / "results" / "suite").mkdir(parents=True)
    assert resolve_reference_dir(str(tmp_path / "results"), tmp_path / "results") is None
    assert resolve_reference_dir(str(tmp_path / "results"), tmp_path / "results" / "suite") is None
    assert resolve_reference_dir(str(tmp_path / "results"), tmp_path / "runs") == tmp_path / "results"
    assert resolve_reference_dir("", tmp_path / "runs") is None


def test_above_chance_is_the_exact_binomial_tail():
    from bench.stats import above_chance_p_value

    assert above_chance_p_value(3, 3, 0.5) == pytest.approx(1 / 8)  # all three right by guessing
    assert above_chance_p_value(2, 3, 0.5) == pytest.approx(4 / 8)  # 3 ways to get two, 1 to get three
    assert above_chance_p_value(1, 2, 0.1) == pytest.approx(1 - 0.81)
    assert above_chance_p_value(0, 10, 0.1) == 1.0
