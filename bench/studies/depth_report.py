"""The depth study's report, `<results dir>/depth/report.md`, and its plot, from records alone.

Rows are the `direct` settings (surrogate and batch norm), columns the architectures by depth:
top-1 at the training latency T_train (and at the grid's best T), and the gradient-flow study's
first-to-last layer gradient ratio and flag for the same setting at that depth.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.errors import UserError
from bench.plots import new_axes, save_figure
from bench.records import latest_rows, read_records
from bench.studies.gradient_report import newest_study

DEPTH_PLOT = "accuracy_vs_depth.png"


def depth_of(architecture: str) -> int:
    """cifar_resnet56 -> 56: the depth in the architecture's name."""
    found = re.search(r"(\d+)$", architecture)
    return int(found.group(1)) if found else 0


def gradient_label(options: dict) -> str:
    """The gradient study's label of a `direct` setting (`bench.studies.gradients.SurrogateSetting`)."""
    bn = "on" if options.get("batch_norm", True) not in (False, "false") else "off"
    return (
        f"{options.get('surrogate', 'triangular')} w={float(options.get('surrogate_width', 1.0)):g} "
        f"h={float(options.get('surrogate_height', 1.0)):g} BN {bn}"
    )


def load_depth_rows(study_dir: Path) -> tuple[pd.DataFrame, dict[tuple[str, str], dict]]:
    """(suite rows: one per label, architecture and T; gradient records by (architecture, label))."""
    stores = [path for path in sorted(study_dir.glob("*/records.jsonl")) if path.parent.name != "gradients"]
    frames = [latest_rows(read_records(store)) for store in stores]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        raise UserError(f"no depth-study records in {study_dir}; run python -m bench.studies.depth first")
    rows = pd.concat(frames, ignore_index=True)
    gradients = {}
    for store in sorted(study_dir.glob("gradients/*/records.jsonl")):
        frame = read_records(store)
        if frame.empty:
            continue
        records = [{k: None if _nan(v) else v for k, v in row.items()} for row in frame.to_dict("records")]
        for record in newest_study(records):
            gradients[(record["architecture"], record["setting"])] = record
    return rows, gradients


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def depth_table(rows: pd.DataFrame, gradients: dict) -> tuple[str, dict[str, dict[int, float]]]:
    ok = rows[rows["status"] == "ok"]
    architectures = sorted(ok["architecture"].unique(), key=depth_of)
    headers = ["setting", "options"] + [
        f"depth {depth_of(a)}: top-1 at T_train / best (%), grad ratio" for a in architectures
    ]
    # The plain ANN of each depth (an `ann` row), the yardstick every spiking setting is read against.
    yardstick = {
        architecture: float(group["top1"].iloc[0])
        for architecture, group in ok[ok["method"] == "ann"].groupby("architecture")
    }
    body, curves = [], {}
    for label, group in ok.groupby("label", sort=False):
        options = group["options"].iloc[0]
        is_ann = group["method"].iloc[0] == "ann"
        cells, curve = [], {}
        for architecture in architectures:
            at = group[group["architecture"] == architecture]
            if at.empty:
                cells.append("")
                continue
            trained_at = int(at["time_steps_train"].iloc[0] or at["time_steps"].min())
            exact = at[at["time_steps"] == trained_at]
            top1 = float(exact["top1"].iloc[0]) if not exact.empty else float("nan")
            curve[depth_of(architecture)] = top1
            if is_ann:
                cells.append(f"{100 * top1:.2f} (the ANN)")
                continue
            best = at.loc[at["top1"].idxmax()]
            gradient = gradients.get((architecture, gradient_label(options)))
            ratio = "no gradient record"
            if gradient is not None:
                value = gradient.get("ratio")
                ratio = f"{value:.3g} {gradient['flag']}" if value is not None else gradient["flag"]
            share = f", {top1 / yardstick[architecture]:.2f} of the ANN" if yardstick.get(architecture) else ""
            cells.append(f"{100 * top1:.2f} / {100 * best['top1']:.2f} (T={int(best['time_steps'])}){share}, {ratio}")
        body.append([label, "ReLU (the ANN itself)" if is_ann else gradient_label(options), *cells])
        curves[label] = curve
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), curves


def plot_depth_accuracy(curves: dict[str, dict[int, float]], path: Path, chance: float | None = None) -> None:
    """Top-1 at T_train against depth, one line per setting, and guessing's accuracy (`chance`) dashed."""
    figure, axes = new_axes()
    for label, curve in curves.items():
        depths = sorted(curve)
        axes.plot(depths, [100 * curve[d] for d in depths], marker="o", label=label)
    if chance is not None:
        axes.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    axes.set_xlabel("depth (CIFAR ResNet)")
    axes.set_ylabel("top-1 at T_train (%)")
    axes.set_title("direct training: accuracy against depth")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    save_figure(figure, path)


def write_depth_report(study_dir: Path) -> Path:
    rows, gradients = load_depth_rows(study_dir)
    table, curves = depth_table(rows, gradients)
    classes = rows["num_classes"].dropna() if "num_classes" in rows else []
    plot_depth_accuracy(curves, study_dir / DEPTH_PLOT, 1 / int(classes.iloc[0]) if len(classes) else None)
    spiking = rows[rows["method"] != "ann"]
    first = (spiking if not spiking.empty else rows).iloc[0]
    commits = ", ".join(sorted(set(rows["commit"].astype(str))))
    hardware = ", ".join(sorted(set(rows["hardware"].astype(str))))
    train_wall = rows.groupby(["label", "architecture"])["train_wall_s"].first().sum()
    lines = [
        f"# Depth study: direct training on {first['dataset']}",
        "",
        f"Every setting trained for {int(first['epochs'])} epochs on {int(first['train_size'])} training images at "
        f"T_train = {int(first['time_steps_train'])}, read on {int(first['test_size'])} test images; the gradient "
        "ratio is the first-to-last layer gradient norm ratio of the gradient-flow study (a few steps from the same "
        "initialization, `bench.studies.gradients`), flagged exploding above 100, vanishing below 0.01. With an "
        "`ann` row, each depth's plain ANN (same recipe) is the yardstick: a setting's top-1 is also given as a "
        "share of it.",
        "",
        table,
        "",
        f"![accuracy against depth]({DEPTH_PLOT})",
        "",
        f"Records: the leaderboard beside this file (every depth in one store) and `gradients/`. Hardware: {hardware}; "
        f"commits: {commits}; training wall time, all settings: {train_wall / 60:.1f} min.",
        "",
        "Regenerate with `python -m bench.studies.depth --report-only --set results_dir=DIR`.",
        "",
    ]
    path = study_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
