"""Leaderboards from records: `results/<dataset>/leaderboard.md`, its plots, and `results/README.md`.

Nothing here is typed by hand. Each table and plot is regenerated from `records.jsonl` alone, the
newest run of every (method label, architecture) pair making one row; papers' numbers come from
`bench/reported.yaml` and stand in their own section, never in a measured row. Rebuilding from
the same records gives the same bytes. `python -m bench.report` rebuilds everything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml
from tabulate import tabulate

from bench.efficiency import ENERGY_CAVEAT, PJ_PER_AC, PJ_PER_MAC
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.plots import ACCURACY_PLOT, ENERGY_PLOT, FIRING_PLOT, plot_accuracy, plot_energy, plot_firing_rates
from bench.records import STORE_NAME, read_records

REPORTED_PATH = Path(__file__).with_name("reported.yaml")
FAMILY_ORDER = {"reference": 0, "direct": 1, "hybrid": 2, "conversion": 3}
FRACTIONS_OF_ANN = (0.90, 0.95, 0.99)
DEFAULT_AT = 32
SORT_KEYS = ("method", "top1", "T@90%", "T@95%", "T@99%", "spikes/neuron", "SOPs", "energy", "train wall")


def latest_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, architecture, T): the newest run of each seed, averaged over seeds.

    With one seed the rows are that run's records, with `seeds` 1. With several, the columns of
    SEED_MEANS hold the mean over the seeds that ran, `top1_std` (and `top5_std`) the sample
    standard deviation, `seeds` how many there were, `seed` which ones, `commit` every commit
    involved; firing rates are averaged per layer, and the rest of the provenance comes from the
    newest run. Failed seeds are left out of the mean; a setting whose seeds all failed shows its
    newest failure.
    """
    if records.empty:
        return records
    records = records.assign(seed=records["seed"].fillna(0).astype(int) if "seed" in records else 0)
    newest = records.groupby(["label", "architecture", "seed"])["run_id"].transform("max")
    chosen = records[records["run_id"] == newest]
    chosen = pd.concat(
        [_mean_over_seeds(group) for _, group in chosen.groupby(["label", "architecture"], sort=False)],
        ignore_index=True,
    )
    chosen["family_order"] = chosen["family"].map(FAMILY_ORDER).fillna(9)
    return chosen.sort_values(["architecture", "family_order", "label", "time_steps"], na_position="first")


SEED_MEANS = (
    "top1",
    "top5",
    "spikes_per_neuron",
    "sops_per_sample",
    "macs_per_sample",
    "energy_uj",
    "ann_energy_uj",
    "train_wall_s",
    "build_wall_s",
    "eval_wall_s",
)


def _mean_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of one setting, one per T (see `latest_rows`)."""
    ok = runs[runs["status"] == "ok"]
    if ok["seed"].nunique() <= 1:
        single = ok if not ok.empty else runs[runs["run_id"] == runs["run_id"].max()]
        return single.assign(seeds=1, top1_std=float("nan"), top5_std=float("nan"))
    rows = []
    for _, at_t in ok.groupby("time_steps", sort=True):
        row = at_t.loc[at_t["run_id"].idxmax()].copy()
        for column in SEED_MEANS:
            if column in at_t and at_t[column].notna().any():
                row[column] = at_t[column].mean()
        row["top1_std"] = at_t["top1"].std(ddof=1)
        row["top5_std"] = at_t["top5"].std(ddof=1) if "top5" in at_t and at_t["top5"].notna().all() else float("nan")
        row["seeds"] = len(at_t)
        row["seed"] = ", ".join(str(seed) for seed in sorted(at_t["seed"]))
        if "commit" in at_t:
            row["commit"] = ", ".join(sorted(set(at_t["commit"].astype(str))))
        rates = [r for r in at_t["firing_rates"] if isinstance(r, dict)] if "firing_rates" in at_t else []
        if len(rates) == len(at_t) and rates:
            row["firing_rates"] = {layer: sum(r.get(layer, 0.0) for r in rates) / len(rates) for layer in rates[0]}
        rows.append(row)
    return pd.DataFrame(rows)


def _settings(rows: pd.DataFrame):
    yield from rows.groupby(["label", "architecture"], sort=False)


def _percent(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.2f}"


def _number(value, digits: int = 1) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _millions(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value / 1e6:.3g}"


def accuracy_table(rows: pd.DataFrame, metric: str = "top1") -> str:
    grid = sorted(int(t) for t in rows.loc[rows["status"] == "ok", "time_steps"].dropna().unique())
    headers = ["method", "family", "architecture", "setting"] + [f"T={t}" for t in grid]
    table = []
    for (label, architecture), group in _settings(rows):
        first = group.iloc[0]
        row = [label, first["family"], architecture, first.get("setting") or ""]
        if first["status"] != "ok":
            row += [f"failed: {first.get('error', '')}"] + [""] * (len(grid) - 1)
        else:
            by_t = {int(r["time_steps"]): r for _, r in group.iterrows()}
            row += [percent_with_spread(by_t[t], metric) if t in by_t else "" for t in grid]
        table.append(row)
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def percent_with_spread(row, metric: str = "top1") -> str:
    """A percentage, `mean ± std` when the row averages several seeds."""
    value = _percent(row.get(metric))
    spread = row.get(f"{metric}_std")
    if row.get("seeds", 1) > 1 and spread is not None and not pd.isna(spread) and value:
        return f"{value} ± {100 * spread:.2f}"
    return value


def ann_accuracy(rows: pd.DataFrame) -> dict[str, float]:
    """The reference ANN's top-1 per architecture (the `ann` row, else the first reference row)."""
    reference = rows[(rows["family"] == "reference") & (rows["status"] == "ok")]
    ceilings = {}
    for architecture, group in reference.groupby("architecture"):
        shared = group[group["label"] == "ann"]
        ceilings[architecture] = (shared if not shared.empty else group)["top1"].iloc[0]
    return ceilings


def silent_settings(rows: pd.DataFrame) -> list[str]:
    """Labels of spiking rows whose last neuron layer never fired: their accuracy is the readout's bias."""
    silent = []
    for (label, _), group in _settings(rows):
        if group["status"].iloc[0] != "ok" or group["family"].iloc[0] == "reference" or "firing_rates" not in group:
            continue
        last = group.sort_values("time_steps").iloc[-1]["firing_rates"]
        if isinstance(last, dict) and last and list(last.values())[-1] == 0:
            silent.append(label)
    return silent


def ceiling_of(first: pd.Series, rows: pd.DataFrame, shared: dict[str, float]) -> float | None:
    """The top-1 a row is measured against: its own ANN's row when the method names one
    (`ceiling`, e.g. `qcfs-ann`), else the architecture's shared ANN."""
    own = first.get("ceiling")
    if isinstance(own, str):
        match = rows[
            (rows["label"] == own) & (rows["architecture"] == first["architecture"]) & (rows["status"] == "ok")
        ]
        if not match.empty:
            return match["top1"].iloc[0]
    return shared.get(first["architecture"])


def latency_to(group: pd.DataFrame, target: float) -> str:
    """The smallest T of the grid whose accuracy reaches `target`, or "not reached"."""
    reached = group[group["top1"] >= target - 1e-12]
    return str(int(reached["time_steps"].min())) if not reached.empty else "not reached"


def efficiency_rows(rows: pd.DataFrame, at: int) -> list[dict]:
    ceilings = ann_accuracy(rows)
    table = []
    for (label, _), group in _settings(rows):
        first = group.iloc[0]
        if first["status"] != "ok":
            continue
        chosen = group[group["time_steps"] == at]
        record = chosen.iloc[0] if not chosen.empty else group.iloc[-1]
        ceiling = ceiling_of(first, rows, ceilings)
        row = {
            "method": label,
            "T": int(record["time_steps"]),
            "top1": record["top1"],
            "top1 shown": percent_with_spread(record),
        }
        for fraction in FRACTIONS_OF_ANN:
            row[f"T@{fraction:.0%}"] = latency_to(group, fraction * ceiling) if ceiling else "no ANN row"
        row["spikes/neuron"] = record.get("spikes_per_neuron")
        row["SOPs"] = record.get("sops_per_sample")
        row["MACs"] = record.get("macs_per_sample")
        row["energy"] = record.get("energy_uj")
        ann_energy = record.get("ann_energy_uj")
        row["energy / ANN"] = record.get("energy_uj") / ann_energy if ann_energy else None
        row.update(
            {
                "epochs": first.get("epochs"),
                "T_train": first.get("time_steps_train"),
                "train wall": first.get("train_wall_s"),
            }
        )
        table.append(row)
    return table


def efficiency_table(rows: pd.DataFrame, at: int, sort: str) -> str:
    table = efficiency_rows(rows, at)
    if sort != "method":
        table.sort(key=lambda row: _sort_value(row[sort], descending=sort == "top1"))
    headers = [
        "method",
        "T",
        "top-1 (%)",
        "T to 90% of ANN",
        "T to 95%",
        "T to 99%",
        "spikes / neuron",
        "SOPs (M)",
        "MACs (M)",
        "energy (µJ)",
        "energy / ANN",
        "epochs",
        "T_train",
        "train wall (s)",
    ]
    body = [
        [
            row["method"],
            row["T"],
            row["top1 shown"],
            row["T@90%"],
            row["T@95%"],
            row["T@99%"],
            _number(row["spikes/neuron"], 3),
            _millions(row["SOPs"]),
            _millions(row["MACs"]),
            _number(row["energy"], 2),
            _number(row["energy / ANN"], 3),
            _integer(row["epochs"]),
            _integer(row["T_train"]),
            _number(row["train wall"]),
        ]
        for row in table
    ]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _sort_value(value, descending: bool):
    """Best first: the highest accuracy, else the lowest cost; "not reached" and blanks last."""
    if isinstance(value, str):
        return (0, float(value)) if value.isdigit() else (1, 0.0)
    if value is None or pd.isna(value):
        return (2, 0.0)
    return (0, -value if descending else value)


def _integer(value) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def provenance_table(rows: pd.DataFrame) -> str:
    headers = [
        "method",
        "data, image size (train / test images)",
        "setting hash",
        "simulate wall (s)",
        "hardware",
        "commit",
        "run",
    ]
    table = []
    for (label, _), group in _settings(rows):
        first = group.iloc[0]
        table.append(
            [
                label,
                f"{first['dataset']}, {_integer(first.get('image_size'))} px "
                f"({first.get('train_size', '?')} / {first.get('test_size', '?')})",
                first.get("setting_hash", "?"),
                _number(first.get("eval_wall_s")),
                f"{first.get('hardware', '?')}, {first.get('device', '?')}",
                first.get("commit", "?"),
                first.get("run_id", "?"),
            ]
        )
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def reported_dataset(dataset: str) -> str:
    """Which papers' dataset a measured one is compared with (`tiny-imagenette` -> `imagenette`)."""
    if dataset.startswith("folder:"):
        dataset = Path(dataset.removeprefix("folder:").rstrip("/")).name
    return dataset.removeprefix("tiny-").split("-")[0].lower()


def reported_table(dataset: str) -> str | None:
    if not REPORTED_PATH.is_file():
        return None
    entries = [
        e for e in (yaml.safe_load(REPORTED_PATH.read_text()) or []) if e.get("dataset") == reported_dataset(dataset)
    ]
    if not entries:
        return None
    headers = ["method", "family", "architecture", "T", "top-1 (%)", "paper's ANN (%)", "paper"]
    body = [
        [
            e["method"],
            e.get("family", ""),
            e.get("architecture", ""),
            e.get("time_steps") or "not given",
            _number(e.get("top1"), 2),
            _number(e.get("ann_top1"), 2),
            _citation(e),
        ]
        for e in entries
    ]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _citation(entry: dict) -> str:
    """`Bu et al. 2022` linked to the paper; the full title stays in `bench/reported.yaml`."""
    short = entry["paper"].split(",")[0]
    return f"[{short}]({entry['url']})" if entry.get("url") else short


def energy_caveat(rows: pd.DataFrame) -> str:
    """The energy convention with the pJ values the records were priced at (the default's text when unset)."""
    prices = rows[["pj_per_mac", "pj_per_ac"]].dropna().drop_duplicates() if "pj_per_mac" in rows else []
    if len(prices) == 0 or [tuple(p) for p in prices.itertuples(index=False)] == [(PJ_PER_MAC, PJ_PER_AC)]:
        return ENERGY_CAVEAT
    given = "; ".join(f"{mac:g} pJ/MAC, {ac:g} pJ/AC" for mac, ac in prices.itertuples(index=False))
    return f"compute only ({given}, as configured; 45 nm: 4.6 and 0.9, Horowitz 2014); memory traffic is not counted"


def write_leaderboard(dataset_dir: Path, at: int | None = None, sort: str = "method") -> Path:
    """Regenerate `leaderboard.md` and its plots in `dataset_dir` from its records. `at` is the T
    of the efficiency table: one of the grid; None takes 32, or the largest T of the grid below it."""
    if sort not in SORT_KEYS:
        raise UserError(f"cannot sort by {sort!r}; choose one of {', '.join(SORT_KEYS)}")
    rows = latest_rows(read_records(dataset_dir / STORE_NAME))
    path = dataset_dir / "leaderboard.md"
    if rows.empty:
        return path
    at = _efficiency_step(rows, at, dataset_dir)
    dataset = rows["dataset"].iloc[0]
    plot_accuracy(rows, dataset_dir / ACCURACY_PLOT)
    lines = [
        f"# Leaderboard: {dataset}",
        "",
        "Top-1 accuracy (%) of the readout averaged over the first T time steps; the `ann` row is the trained",
        "ANN, the ceiling. Every measured number here is generated from `records.jsonl` beside this file.",
        "",
    ]
    if (rows["seeds"] > 1).any():
        lines += [
            "With several seeds a cell is the mean ± the sample standard deviation over them, and every other number",
            "is the mean; a seed sets initialization, data order, augmentation and the data subsets.",
            "",
        ]
    lines += [accuracy_table(rows), ""]
    silent = silent_settings(rows)
    if silent:
        lines += [f"Silent (no spike reached the last neuron layer at any T): {', '.join(silent)}.", ""]
    lines += [f"![accuracy versus T]({ACCURACY_PLOT})", ""]
    if "top5" in rows and rows["top5"].notna().any():
        lines += ["Top-5 accuracy (%):", "", accuracy_table(rows, "top5"), ""]
    lines += [
        f"## Latency and efficiency at T = {at}",
        "",
        "Per test image. T to x% of ANN: the smallest T of the grid reaching that fraction of the ANN's top-1.",
        f"Energy: {energy_caveat(rows)}.",
        "",
        efficiency_table(rows, at, sort),
        "",
    ]
    if plot_energy(rows, dataset_dir / ENERGY_PLOT):
        lines += [f"![accuracy versus energy]({ENERGY_PLOT})", ""]
    if plot_firing_rates(rows, at, dataset_dir / FIRING_PLOT):
        lines += [f"![firing rate per layer]({FIRING_PLOT})", ""]
    reported = reported_table(dataset)
    if reported:
        lines += [
            "## Reported in papers, not measured here",
            "",
            f"Numbers the papers report on {reported_dataset(dataset)} (full data, their own models and training), "
            "from `bench/reported.yaml`; for context only.",
            "",
            reported,
            "",
        ]
    lines += ["## How it was produced", "", provenance_table(rows), ""]
    first = rows.iloc[0]
    seed_sets = sorted(set(rows["seed"].astype(str)))
    seeds = (
        f"seed {seed_sets[0]}" if len(seed_sets) == 1 and "," not in seed_sets[0] else "seeds " + "; ".join(seed_sets)
    )
    lines += [
        f"Model options: {first.get('model_options', '')}; {seeds}; versions: {_versions(first.get('versions'))}.",
        "",
        "Regenerate with `python -m bench.report`.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def _versions(versions) -> str:
    if not isinstance(versions, dict):
        return "?"
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))


def leaderboard_stores(results_dir: Path) -> list[Path]:
    """Every suite's records under `results_dir`: `<dataset>/records.jsonl`, and one level deeper for
    a suite written to a folder of its own (`--results-dir results/<suite>`); the gradient study
    keeps its own report."""
    stores = list(results_dir.glob(f"*/{STORE_NAME}")) + list(results_dir.glob(f"*/*/{STORE_NAME}"))
    return sorted(store for store in stores if "gradients" not in store.relative_to(results_dir).parts)


def write_index(results_dir: Path) -> Path:
    """`results/README.md`: one line per leaderboard with its best measured method."""
    lines = [
        "# Results",
        "",
        "Every leaderboard below is generated from its `records.jsonl` by `python -m bench.report`.",
        "",
    ]
    table = []
    for store in leaderboard_stores(results_dir):
        rows = latest_rows(read_records(store))
        ok = rows[rows["status"] == "ok"] if not rows.empty else rows
        if ok.empty:
            continue
        spiking = ok[ok["family"] != "reference"]
        best = spiking.loc[spiking["top1"].idxmax()] if not spiking.empty else None
        ceilings = ann_accuracy(ok)
        table.append(
            [
                f"[{ok['dataset'].iloc[0]}]({store.parent.relative_to(results_dir).as_posix()}/leaderboard.md)",
                ", ".join(sorted(ok["architecture"].unique())),
                ", ".join(f"{architecture}: {_percent(top1)}" for architecture, top1 in ceilings.items()),
                f"{best['label']} ({best['architecture']}): {_percent(best['top1'])} at T={int(best['time_steps'])}"
                if best is not None
                else "",
                ", ".join(sorted(ok["commit"].astype(str).unique())),
            ]
        )
    lines += [
        tabulate(
            table,
            headers=["leaderboard", "architectures", "ANN top-1 (%)", "best spiking top-1", "commits"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    studies = sorted(results_dir.glob("perf*.md")) + sorted(results_dir.glob("gradients/*/report.md"))
    if studies:
        lines += [
            "Other measurements, each naming the command that generated it: "
            + ", ".join(f"[{path.relative_to(results_dir)}]({path.relative_to(results_dir)})" for path in studies)
            + ".",
            "",
        ]
    path = results_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


def _efficiency_step(rows: pd.DataFrame, at: int | None, dataset_dir: Path) -> int:
    grid = sorted(int(t) for t in rows.loc[rows["status"] == "ok", "time_steps"].dropna().unique())
    if at is not None and grid and at not in grid:
        raise UserError(f"--at {at} is not a T of {dataset_dir}'s grid; choose one of {', '.join(map(str, grid))}")
    if at is not None or not grid:
        return at if at is not None else DEFAULT_AT
    below = [t for t in grid if t <= DEFAULT_AT]
    return below[-1] if below else grid[0]


def rebuild_all(results_dir: Path, at: int | None = None, sort: str = "method") -> list[Path]:
    paths = [write_leaderboard(store.parent, at, sort) for store in leaderboard_stores(results_dir)]
    return paths + [write_index(results_dir)]


def main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _run(argv))


def _run(argv: list[str] | None) -> int:
    parser = OneLineArgumentParser(
        description="Regenerate every leaderboard and plot under a results folder from its records."
    )
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--at", type=int, help=f"T of the grid for the efficiency table (default {DEFAULT_AT})")
    parser.add_argument("--sort", default="method", help=f"sort the efficiency table by one of: {', '.join(SORT_KEYS)}")
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        raise UserError(f"results folder {args.results_dir} does not exist; run `python run_all.py` first")
    for path in rebuild_all(Path(args.results_dir), args.at, args.sort):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
