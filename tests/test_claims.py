"""The claims report and the depth study: verdict rules on hand-made records, the committed
reports rebuilt byte for byte, and the depth study end to end on a tiny setting."""

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from bench.claims import DepthCell, batch_norm_claim, latency_claim, surrogate_claim, write_claims
from bench.records import append_records
from bench.report import rebuild_all
from bench.stats import pack_bits
from bench.studies import depth
from tests.test_report import record

ROOT = Path(__file__).resolve().parents[1]


def curve(label, family, accuracies):
    return [record(label, family, t, acc, test_size=500) for t, acc in accuracies.items()]


def leaderboard(direct, conversion):
    rows = curve("ann", "reference", {t: 0.80 for t in direct})
    rows += curve("direct", "direct", direct) + curve("conversion", "conversion", conversion)
    return pd.DataFrame(rows)


def test_latency_verdict_is_the_ratio_of_steps_to_the_direct_rows_best_accuracy(tmp_path):
    grid = (1, 4, 16, 64, 256, 1000)
    direct = dict(zip(grid, (0.60, 0.70, 0.68, 0.66, 0.65, 0.65)))  # best 70 % at T = 4
    slow = dict(zip(grid, (0.10, 0.20, 0.40, 0.60, 0.69, 0.75)))  # reaches 70 % at T = 1000: 250 times later
    finding = latency_claim([(tmp_path / "a", leaderboard(direct, slow))], tmp_path)
    assert finding.verdict == "holds" and "reached it at T = 1000, 250 times later" in finding.why
    medium = dict(zip(grid, (0.10, 0.20, 0.40, 0.72, 0.78, 0.79)))  # at T = 64: 16 times later
    assert latency_claim([(tmp_path / "a", leaderboard(direct, medium))], tmp_path).verdict == "partly holds"
    fast = dict(zip(grid, (0.10, 0.50, 0.75, 0.79, 0.80, 0.80)))  # at T = 16: 4 times later
    assert latency_claim([(tmp_path / "a", leaderboard(direct, fast))], tmp_path).verdict == "does not hold"
    assert latency_claim([], tmp_path).verdict == "not testable here"


def test_latency_is_read_against_the_faithful_conversion_and_today_s_fastest_row_beside_it(tmp_path):
    grid = (1, 4, 16, 64, 256, 1000)
    direct = dict(zip(grid, (0.60, 0.70, 0.68, 0.66, 0.65, 0.65)))
    faithful = dict(zip(grid, (0.10, 0.20, 0.40, 0.60, 0.69, 0.75)))  # 70 % at T = 1000
    improved = dict(zip(grid, (0.10, 0.50, 0.75, 0.79, 0.80, 0.80)))  # 70 % at T = 16
    rows = leaderboard(direct, faithful)
    rows = pd.concat([rows, pd.DataFrame(curve("conversion-improved", "conversion", improved))])
    finding = latency_claim([(tmp_path / "a", rows)], tmp_path)
    assert finding.verdict == "holds"  # the sentence is about the conversion of its time
    assert "`conversion-improved`, reached it at T = 16 (does not hold by the same rule: 4 times)" in finding.why
    # A `conversion` row run with other options than the method's defaults is not the paper's conversion.
    variant = leaderboard(direct, improved).assign(setting=lambda f: f["label"].map({"conversion": "x=1"}))
    assert latency_claim([(tmp_path / "a", variant.fillna(""))], tmp_path).verdict == "not testable here"


def test_latency_reads_the_paper_s_method_first_and_the_best_of_each_family_beside_it(tmp_path):
    grid = (1, 4, 16, 64, 256, 1000)
    direct = dict(zip(grid, (0.30, 0.50, 0.52, 0.52, 0.52, 0.52)))  # `direct`: best 52 % at T = 16
    tet = dict(zip(grid, (0.60, 0.72, 0.72, 0.72, 0.72, 0.72)))  # a later method: 72 % at T = 4
    faithful = dict(zip(grid, (0.10, 0.20, 0.40, 0.55, 0.69, 0.75)))  # 52 % at T = 64, 72 % at T = 1000
    rows = pd.concat([leaderboard(direct, faithful), pd.DataFrame(curve("tet", "direct", tet))])
    finding = latency_claim([(tmp_path / "a", rows)], tmp_path)
    # As the paper meant it: `direct`'s 52 % at T = 16 against `conversion` at T = 64: 4 times.
    assert finding.verdict == "does not hold"
    assert "`direct` reached its best, 52.00 %, at T = 16" in finding.why
    assert "reached it at T = 64, 4 times later" in finding.why
    # Today: tet's 72 % at T = 4 against `conversion` (the only conversion row) at T = 1000.
    assert "`tet`, reached 72.00 % at T = 4" in finding.why
    assert "`conversion`, reached it at T = 1000 (holds by the same rule: 250 times)" in finding.why
    paper_table, today_table = finding.evidence[2], finding.evidence[6]
    assert "direct: 52.00 at T=16 (65% of ANN)" in paper_table and "64 (4×)" in paper_table
    # 90 / 95 / 99 % of the ANN's 80 %: 72, 76, 79.2 %: `direct` never, `conversion` at T = 1000 for 72 %.
    assert "not reached vs 1000 / not reached vs not reached / not reached vs not reached" in paper_table
    assert "tet: 72.00 at T=4 (90% of ANN)" in today_table and "conversion: 1000 (250×)" in today_table
    assert "4 vs 1000 / not reached vs not reached / not reached vs not reached" in today_table
    # A conversion that never reaches it is judged on the least the ratio can be: 1000 / 16 = 62.5.
    never = dict(zip(grid, (0.10, 0.20, 0.30, 0.40, 0.45, 0.50)))
    finding = latency_claim([(tmp_path / "a", leaderboard(direct, never))], tmp_path)
    assert finding.verdict == "partly holds" and "(≥ 62×)" in finding.evidence[2]
    # Without a `direct` row the paper's reading cannot be made.
    assert latency_claim([(tmp_path / "a", rows[rows["label"] != "direct"])], tmp_path).verdict == "not testable here"


def test_the_committed_reports_rebuild_byte_for_byte_from_their_records(tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(ROOT / "results", copy)
    rebuild_all(copy)
    committed = sorted(path.relative_to(ROOT / "results") for path in (ROOT / "results").rglob("*.md"))
    assert Path("claims.md") in committed
    for relative in committed:
        if relative.parts[0] == "gradients" or relative.name.startswith("perf") or relative.parts[0] == "depth":
            continue  # the studies' own reports, rebuilt by their commands
        assert (copy / relative).read_bytes() == (ROOT / "results" / relative).read_bytes(), relative


def test_depth_study_end_to_end_and_its_claims(tmp_path):
    overrides = [
        "architectures=[cifar_resnet8,cifar_resnet14]",
        "suite.data.name=tiny-imagenette",
        "suite.data.train_subset=64",
        "suite.data.test_subset=32",
        "suite.train.epochs=1",
        "suite.eval.time_steps=[1,2,4]",
        f"suite.cache_dir={tmp_path / 'cache'}",
        "gradient_steps=1",
        "gradient_train_subset=64",
        f"results_dir={tmp_path / 'results'}",
    ]
    argv = ["--quiet", *[item for override in overrides for item in ("--set", override)]]
    assert depth.main(argv) == 0
    study = tmp_path / "results" / "depth"
    report = (study / "report.md").read_text()
    assert (study / "accuracy_vs_depth.png").is_file()
    for label in ("bn", "bn-wide", "bn-narrow", "no-bn"):
        line = next(line for line in report.splitlines() if line.startswith(f"| {label} "))
        assert line.count("(T=") == 2, line  # a cell per depth
    assert "triangular w=0.05 h=1 BN on" in report and "vanishing" in report
    ann = next(line for line in report.splitlines() if line.startswith("| ann "))
    assert ann.count("(the ANN)") == 2  # each depth's yardstick
    assert report.count(" of the ANN, ") >= 8  # every spiking cell read against its depth's ANN
    assert depth.main([*argv, "--report-only"]) == 0
    assert (study / "report.md").read_text() == report  # rebuilt from the records alone
    # a gradient study for the claims' gradient side, then the claims read both
    append_records(
        tmp_path / "results" / "gradients" / "x" / "records.jsonl",
        [
            gradient("triangular w=1 h=1 BN on", True, 1.0, "stable"),
            gradient("triangular w=4 h=1 BN on", True, 4.0, "exploding"),
            gradient("triangular w=0.05 h=1 BN on", True, 0.05, "vanishing"),
            gradient("triangular w=1 h=1 BN off", False, 1.0, "silent"),
        ],
    )
    claims = write_claims(tmp_path / "results").read_text()
    assert "depth 8: default" in claims and "depth 14: default" in claims
    assert re.search(r"depth 8: default [\d.]+, wide [\d.]+, narrow [\d.]+ \(ANN [\d.]+\)", claims)
    assert re.search(r"\| \(b\) exploding or vanishing gradients in deep SNNs +\| holds +\|", claims)


def gradient(setting, batch_norm, width, flag):
    return {
        "setting": setting,
        "batch_norm": batch_norm,
        "surrogate": "triangular",
        "width": width,
        "height": 1.0,
        "flag": flag,
        "ratio": {"stable": 1.0, "exploding": 1e4, "vanishing": 1e-5, "silent": None}[flag],
        "status": "ok",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "run_id": "r",
        "study_hash": "s",
        "architecture": "cifar_resnet20",
        "dataset": "tiny-imagenette",
        "layers": ["a", "b"],
        "direct": {"time_steps_train": 4},
        "steps": 4,
        "exploding_ratio": 100.0,
        "vanishing_ratio": 0.01,
    }


def cell(correct: list[bool]) -> DepthCell:
    """A depth-study cell of one seed read on len(correct) images of 10 classes."""
    bits = np.array(correct, dtype=bool)
    return DepthCell(bits.mean(), {0: (pack_bits(bits), len(bits))}, test_images=len(bits), chance=0.1)


def test_depth_claims_are_judged_where_the_default_trained_above_chance():
    """40 images: 16 right is above chance (p = 5.9e-7 on Binomial(40, 0.1)), 4 right is not (p = 0.58);
    the deepest network's default stayed at chance, so (c) and (d) are judged at the depth below."""
    good = [True] * 16 + [False] * 24  # 40 % on 40 images
    guess = [True] * 4 + [False] * 36  # 10 %: chance
    worse = [False] * 16 + [True] * 4 + [False] * 20  # right only where `good` is wrong: McNemar (16, 4)
    assert cell(good).trained and not cell(guess).trained
    depth = {
        8: {"default": cell(good), "wide": cell(guess), "narrow": cell(guess), "no-bn": cell(guess)},
        56: {"default": cell(guess), "wide": cell(worse), "narrow": cell(guess), "no-bn": cell(guess)},
    }
    studies = [(Path("gradients/x"), [gradient("triangular w=1 h=1 BN on", True, 1.0, "stable")])]
    studies[0][1].append(gradient("triangular w=4 h=1 BN on", True, 4.0, "exploding"))
    studies[0][1].append(gradient("triangular w=1 h=1 BN off", False, 1.0, "silent"))
    surrogate = surrogate_claim(studies, Path("."), depth)
    assert surrogate.verdict == "holds", surrogate.why
    assert "At depth 8, the deepest at which" in surrogate.why and "10.00 % at depth 56" in surrogate.why
    batch_norm = batch_norm_claim(studies, Path("."), depth)
    assert batch_norm.verdict == "holds" and "trained better than chance (8)" in batch_norm.why
    nothing_trained = {56: depth[56]}
    assert "cannot tell" in batch_norm_claim(studies, Path("."), nothing_trained).why
    assert surrogate_claim(studies, Path("."), nothing_trained).verdict == "partly holds"


def test_a_depth_whose_ann_trains_but_whose_snn_does_not_is_stated_as_a_finding():
    """With each depth's ANN as the yardstick, `trained` is at least half of it: 16 of 40 right (40 %)
    against an ANN of 60 % trains, 4 of 40 (10 %) against 45 % does not. Depth 56's ANN learnt (45 %,
    over twice the 10 % of chance) where its SNN did not: the claims say so as a finding; with an
    ANN at chance too, the budget tells nothing there."""
    good = [True] * 16 + [False] * 24
    guess = [True] * 4 + [False] * 36
    worse = [False] * 16 + [True] * 4 + [False] * 20

    def at(correct, ann):
        return dataclasses.replace(cell(correct), ann=ann)

    depth = {
        8: {k: at(bits, 0.6) for k, bits in [("default", good), ("wide", worse), ("narrow", guess), ("no-bn", guess)]},
        56: {k: at(guess, 0.45) for k in ("default", "wide", "narrow", "no-bn")},
    }
    assert depth[8]["default"].trained and not depth[56]["default"].trained
    studies = [(Path("gradients/x"), [gradient("triangular w=1 h=1 BN on", True, 1.0, "stable")])]
    studies[0][1].append(gradient("triangular w=4 h=1 BN on", True, 4.0, "exploding"))
    surrogate = surrogate_claim(studies, Path("."), depth)
    assert surrogate.verdict == "holds", surrogate.why
    assert "the deepest at which the default surrogate reached half its ANN" in surrogate.why
    assert "(10.00 % at depth 56; its ANN 45.00 %), no setting is compared, and that is a finding" in surrogate.why
    assert "default SNN of depth 56 did not train while the plain ANN" in surrogate.why
    batch_norm = batch_norm_claim(studies, Path("."), depth)
    assert "reached half its ANN (8)" in batch_norm.why and "that is a finding" in batch_norm.why
    depth[56] = {k: at(guess, 0.12) for k in ("default", "wide", "narrow", "no-bn")}  # an ANN that learnt nothing
    surrogate = surrogate_claim(studies, Path("."), depth)
    assert "so this budget tells nothing there" in surrogate.why and "finding" not in surrogate.why
