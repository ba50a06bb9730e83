"""Leaderboards from records: `results/<dataset>/leaderboard.md` and its accuracy-versus-T plot.

Nothing here is typed by hand: each table and plot is regenerated from `records.jsonl` alone, the
newest run of every (method label, architecture) pair making one row. Running
`python -m bench.report` rebuilds every leaderboard under `results/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench.records import STORE_NAME, read_records  # noqa: E402

PLOT_NAME = "accuracy_vs_T.png"
FAMILY_ORDER = {"reference": 0, "direct": 1, "conversion": 2}


def latest_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The records of the newest run of each (label, architecture)."""
    if records.empty:
        return records
    newest = records.groupby(["label", "architecture"])["run_id"].transform("max")
    chosen = records[records["run_id"] == newest].copy()
    chosen["family_order"] = chosen["family"].map(FAMILY_ORDER).fillna(9)
    return chosen.sort_values(["architecture", "family_order", "label", "time_steps"], na_position="first")


def accuracy_table(rows: pd.DataFrame, metric: str = "top1") -> tuple[list[str], list[list[str]]]:
    grid = sorted(int(t) for t in rows.loc[rows["status"] == "ok", "time_steps"].dropna().unique())
    headers = ["method", "family", "architecture", "setting"] + [f"T={t}" for t in grid]
    table = []
    for (label, architecture), group in rows.groupby(["label", "architecture"], sort=False):
        first = group.iloc[0]
        row = [label, first["family"], architecture, first.get("setting") or ""]
        if first["status"] != "ok":
            row += [f"failed: {first.get('error', '')}"] + [""] * (len(grid) - 1)
        else:
            by_t = dict(zip(group["time_steps"].astype(int), group[metric]))
            row += [_percent(by_t.get(t)) for t in grid]
        table.append(row)
    return headers, table


def _percent(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.2f}"


def provenance_table(rows: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "data (train / test images)", "epochs", "T_train", "train wall (s)", "simulate wall (s)", "hardware", "commit", "run"]
    table = []
    for (label, _), group in rows.groupby(["label", "architecture"], sort=False):
        first = group.iloc[0]
        table.append([
            label, f"{first['dataset']} ({first.get('train_size', '?')} / {first.get('test_size', '?')})",
            _integer(first.get("epochs")), _integer(first.get("time_steps_train")),
            _seconds(first.get("train_wall_s")), _seconds(first.get("eval_wall_s")),
            f"{first.get('hardware', '?')}, {first.get('device', '?')}", first.get("commit", "?"), first.get("run_id", "?"),
        ])
    return headers, table


def _integer(value) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def _seconds(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1f}"


def plot_accuracy(rows: pd.DataFrame, path: Path) -> None:
    ok = rows[rows["status"] == "ok"]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (label, architecture), group in ok.groupby(["label", "architecture"], sort=False):
        name = f"{label} ({architecture})"
        if group["family"].iloc[0] == "reference":
            axes.axhline(100 * group["top1"].iloc[0], linestyle="--", color="grey", label=f"{name}: ceiling")
        else:
            group = group.sort_values("time_steps")
            axes.plot(group["time_steps"], 100 * group["top1"], marker="o", markersize=3, label=name)
    axes.set_xscale("log")
    axes.set_xlabel("time steps T (log scale)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def write_leaderboard(dataset_dir: Path) -> Path:
    """Regenerate `leaderboard.md` and the plot in `dataset_dir` from its records."""
    records = read_records(dataset_dir / STORE_NAME)
    rows = latest_rows(records)
    path = dataset_dir / "leaderboard.md"
    if rows.empty:
        return path
    plot_accuracy(rows, dataset_dir / PLOT_NAME)
    dataset = rows["dataset"].iloc[0]
    lines = [
        f"# Leaderboard: {dataset}",
        "",
        "Top-1 accuracy (%) of the readout averaged over the first T time steps. The `ann` row is the",
        "trained ANN (the ceiling); every number comes from `records.jsonl` beside this file.",
        "",
        tabulate(accuracy_table(rows)[1], headers=accuracy_table(rows)[0], tablefmt="github", disable_numparse=True),
        "",
    ]
    if "top5" in rows and rows["top5"].notna().any():
        headers, table = accuracy_table(rows, "top5")
        lines += ["Top-5 accuracy (%):", "", tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    lines += [f"![accuracy versus T]({PLOT_NAME})", "", "## How it was produced", ""]
    headers, table = provenance_table(rows)
    lines += [tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    first = rows.iloc[0]
    lines += [f"Model options: {first.get('model_options', '')}; versions: {_versions(first.get('versions'))}.", ""]
    lines += ["Regenerate with `python -m bench.report`.", ""]
    path.write_text("\n".join(lines))
    return path


def _versions(versions) -> str:
    if not isinstance(versions, dict):
        return "?"
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))


def rebuild_all(results_dir: Path) -> list[Path]:
    return [write_leaderboard(store.parent) for store in sorted(results_dir.glob(f"*/{STORE_NAME}"))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate every leaderboard under a results folder from its records.")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    for path in rebuild_all(Path(args.results_dir)):
        print(path)


if __name__ == "__main__":
    main()
