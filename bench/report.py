"""Leaderboards from records: `<results dir>/<dataset>/leaderboard.md`, its plots, and the index
`<results dir>/README.md`.

Nothing here is typed by hand. Each table and plot is regenerated from `records.jsonl` alone, the
newest run of every (method label, architecture) pair making one row; papers' numbers come from
`bench/reported.yaml` and stand in their own section, never in a measured row. Rebuilding from
the same records gives the same bytes. `python -m bench.report --results-dir DIR` rebuilds everything
under DIR (default `runs`), comparing its rows with the references in `results/` (`bench.reference`).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pandas as pd
import yaml
from tabulate import tabulate

from bench.budget import ann_epoch_equivalents, budget_sources
from bench.claims import CLAIMS_NAME, write_claims
from bench.config import load_config, shipped_configs
from bench.efficiency import ENERGY_CAVEAT, PJ_PER_AC, PJ_PER_MAC
from bench.errors import OneLineArgumentParser, UserError, exit_status
from bench.plots import ACCURACY_PLOT, ENERGY_PLOT, FIRING_PLOT, plot_accuracy, plot_energy, plot_firing_rates
from bench.records import STORE_NAME, latest_rows, leaderboard_stores, read_records
from bench.reference import Verdict, resolve_reference_dir, verdicts
from bench.stats import paired_p_value, wilson_interval

REPORTED_PATH = Path(__file__).with_name("reported.yaml")
FRACTIONS_OF_ANN = (0.90, 0.95, 0.99)
DEFAULT_AT = 32
SORT_KEYS = ("method", "top1", "T@90%", "T@95%", "T@99%", "spikes/neuron", "SOPs", "energy", "train wall")


def _settings(rows: pd.DataFrame):
    yield from rows.groupby(["label", "architecture"], sort=False)


def _percent(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.2f}"


def _number(value, digits: int = 1) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _millions(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value / 1e6:.3g}"


def accuracy_table(rows: pd.DataFrame, metric: str = "top1") -> str:
    """Rows of settings, columns of T. For top-1, the best spiking row at each T is in bold and a row
    whose difference to it is significant on the paired test (`paired_marks`) carries a `*`."""
    grid = sorted(int(t) for t in rows.loc[rows["status"] == "ok", "time_steps"].dropna().unique())
    marks = paired_marks(rows) if metric == "top1" else {}
    # With no finished row there is no T to head a column: one column holds the failures.
    headers = ["method", "family", "architecture", "setting"] + ([f"T={t}" for t in grid] or ["result"])
    table = []
    for (label, architecture), group in _settings(rows):
        first = group.iloc[0]
        row = [label, first["family"], architecture, first.get("setting") or ""]
        if first["status"] != "ok":
            row += [f"failed: {first.get('error', '')}"] + [""] * max(len(grid) - 1, 0)
        else:
            by_t = {int(r["time_steps"]): r for _, r in group.iterrows()}
            row += [_marked(by_t[t], metric, marks.get((label, architecture, t))) if t in by_t else "" for t in grid]
        table.append(row)
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _marked(row, metric: str, mark: str | None) -> str:
    cell = percent_with_spread(row, metric)
    if mark == "best":
        return f"**{cell}**"
    return cell + " \\*" if mark == "worse" else cell


def percent_with_spread(row, metric: str = "top1") -> str:
    """A percentage with its uncertainty: `mean ± std` over seeds when the row averages several,
    else the 95 % Wilson interval from the number of test images, `58.40 (54.03–62.64)`."""
    value = _percent(row.get(metric))
    if not value:
        return value
    spread = row.get(f"{metric}_std")
    if row.get("seeds", 1) > 1 and spread is not None and not pd.isna(spread):
        return f"{value} ± {100 * spread:.2f}"
    interval = _wilson(row, metric)
    return f"{value} ({100 * interval[0]:.2f}–{100 * interval[1]:.2f})" if interval else value


def compact_cell(row, metric: str = "top1") -> str:
    """A short cell for the terminal: `58.3±2.2`, ± the standard deviation over seeds, or for one
    run half the width of its 95 % Wilson interval."""
    value = row.get(metric)
    if value is None or pd.isna(value):
        return ""
    spread = row.get(f"{metric}_std")
    if row.get("seeds", 1) > 1 and spread is not None and not pd.isna(spread):
        return f"{100 * value:.1f}±{100 * spread:.1f}"
    interval = _wilson(row, metric)
    return f"{100 * value:.1f}±{50 * (interval[1] - interval[0]):.1f}" if interval else f"{100 * value:.1f}"


def _wilson(row, metric: str) -> tuple[float, float] | None:
    images = row.get("test_size")
    if images is None or pd.isna(images) or int(images) <= 0:
        return None
    return wilson_interval(round(row[metric] * int(images)), int(images))


SIGNIFICANCE = 0.05


def paired_marks(rows: pd.DataFrame) -> dict[tuple[str, str, int], str]:
    """At each T, the best spiking row ("best") and the rows significantly below it ("worse").

    Two rows are compared on the same test images with the exact McNemar test (`bench.stats`),
    the discordant counts summed over the seeds both rows ran (each seed draws its own subset);
    p < SIGNIFICANCE, not corrected for the many comparisons of a table. A row without
    per-image records (older records) is not tested and stays unmarked.
    """
    spiking = rows[(rows["status"] == "ok") & (rows["family"] != "reference")]
    marks: dict[tuple[str, str, int], str] = {}
    if spiking.empty or "correct_by_seed" not in spiking:
        return marks
    for t, at_t in spiking.groupby("time_steps"):
        best = at_t.loc[at_t["top1"].idxmax()]
        marks[(best["label"], best["architecture"], int(t))] = "best"
        for _, other in at_t.iterrows():
            if (other["label"], other["architecture"]) == (best["label"], best["architecture"]):
                continue
            p_value = paired_p_value(best["correct_by_seed"], other["correct_by_seed"])
            if p_value is not None and p_value < SIGNIFICANCE:
                marks[(other["label"], other["architecture"], int(t))] = "worse"
    return marks


VERDICT_RULE = (
    "the gap to the reference's mean is allowed z·σ·√(1/seeds + 1/reference seeds) at each T, σ the larger "
    "of the seed spreads and the binomial spread of one accuracy on that many test images, z set so that "
    "chance flags a row in at most 5 % of runs (Bonferroni over its T); the row names the T of its largest "
    "gap relative to that (see `bench/reference.py`)."
)


def verdict_table(found: list[Verdict]) -> str:
    headers = ["method", "reference", "reference seeds", "T", "yours (%)", "reference (%)", "gap", "allowed", "verdict"]
    body = [
        [
            v.label,
            f"{v.reference}/leaderboard.md",
            v.reference_seeds,
            v.time_steps,
            _percent(v.ours),
            _percent(v.theirs),
            f"{100 * v.gap:+.2f}",
            f"±{100 * v.allowed:.2f}",
            "reproduced" if v.reproduced else "not reproduced",
        ]
        for v in found
    ]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def uncertainty_note(rows: pd.DataFrame) -> str:
    """What the intervals and marks of the accuracy table mean, for the rows at hand."""
    parts = []
    if (rows["seeds"] > 1).any():
        parts.append(
            "With several seeds a cell is the mean ± the sample standard deviation over them, and every other "
            "number is the mean; a seed sets initialization, data order, augmentation and the data subsets."
        )
    if (rows["seeds"] == 1).any():
        parts.append(
            "A cell of one run gives, in brackets, the 95 % Wilson interval of its accuracy on that many test images."
        )
    parts.append(
        f"In bold: the best spiking row at that T; \\* marks a row below it by a difference that the exact "
        f"McNemar test on the same test images (discordant images summed over common seeds) finds significant, "
        f"p < {SIGNIFICANCE:g}, not corrected for multiple comparisons; unmarked rows are not distinguishable from "
        f"the best at this number of test images."
    )
    untested = [
        label
        for (label, _), group in _settings(rows)
        if group["status"].iloc[0] == "ok"
        and group["family"].iloc[0] != "reference"
        and not any(isinstance(v, dict) and v for v in group.get("correct_by_seed", []))
    ]
    if untested:
        parts.append(f"Not tested (their records predate per-image results): {', '.join(untested)}.")
    return " ".join(parts)


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


def _minutes(seconds) -> str:
    """Seconds as minutes with one decimal, or empty where not recorded."""
    return "" if seconds is None or pd.isna(seconds) else f"{float(seconds) / 60:.1f}"


def last_epoch(notes) -> str:
    """The last training epoch's mean loss and accuracy, from the record's `train_history`; empty
    where none was kept (no training, or a network trained before records kept it)."""
    history = notes.get("train_history") if isinstance(notes, dict) else None
    if not history:
        return ""
    _, loss, accuracy = history[-1]
    return f"{loss:.3f} / {100 * accuracy:.1f}"


def provenance_table(rows: pd.DataFrame) -> str:
    headers = [
        "method",
        "data, image size (train / test images)",
        "setting hash",
        "epochs",
        "budget (ANN-epoch equiv.)",
        "last epoch: train loss / top-1 (%)",
        "train wall (min)",
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
                _integer(first.get("epochs")),
                ann_epoch_equivalents(first),
                last_epoch(first.get("notes")),
                _minutes(first.get("train_wall_s")),
                _number(first.get("eval_wall_s")),
                f"{first.get('hardware', '?')}, {first.get('device', '?')}",
                first.get("commit", "?"),
                first.get("run_id", "?"),
            ]
        )
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def wall_time_total(rows: pd.DataFrame) -> str:
    """The training and simulation time of the rows, summed over settings and seeds."""
    # Failed rows may lack the timing columns altogether (a store of failures only).
    rows = rows.reindex(columns=rows.columns.union(["seed", "epochs", "train_wall_s", "eval_wall_s"], sort=False))
    settings = rows.drop_duplicates(["label", "architecture", "seed"])
    # Rows built on one trained network (`ann` and the conversions) carry its training time each.
    networks = settings.drop_duplicates(["architecture", "seed", "epochs", "train_wall_s"])
    training = pd.to_numeric(networks["train_wall_s"], errors="coerce").fillna(0).sum() / 3600
    simulation = pd.to_numeric(settings["eval_wall_s"], errors="coerce").fillna(0).sum() / 3600
    return (
        f"Wall time of all rows: training {training:.2f} h (a network that several rows start from counted "
        f"once), simulation {simulation:.2f} h, on the hardware each row names."
    )


@functools.cache
def _shipped_config_hashes() -> tuple[tuple[str, str], ...]:
    """(file name, settings hash) of every shipped config, read once per process."""
    found = []
    for path in sorted(shipped_configs().glob("*.yaml")):
        try:
            found.append((path.name, load_config(path).section_hash("data", "model", "train", "eval")))
        except UserError:
            continue
    return tuple(found)


def shipped_config_command(rows: pd.DataFrame) -> str | None:
    """The command of each shipped config whose settings hash to a config hash of the rows."""
    hashes = set(rows["config_hash"].dropna()) if "config_hash" in rows else set()
    commands = [
        f"`python run_all.py --config configs/{name}`"
        for name, settings in _shipped_config_hashes()
        if settings in hashes
    ]
    if not commands:
        return None
    return (
        f"Run by {' or '.join(commands)}: its data, model, training and evaluation settings hash to the "
        "records' config hash."
    )


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


def write_leaderboard(
    dataset_dir: Path, at: int | None = None, sort: str = "method", reference_dir: Path | None = None
) -> Path:
    """Regenerate `leaderboard.md` and its plots in `dataset_dir` from its records. `at` is the T
    of the efficiency table: one of the grid; None takes 32, or the largest T of the grid below it.
    With `reference_dir`, rows whose setting has a published reference there get a verdict."""
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
    lines += [uncertainty_note(rows), "", accuracy_table(rows), ""]
    silent = silent_settings(rows)
    if silent:
        lines += [f"Silent (no spike reached the last neuron layer at any T): {', '.join(silent)}.", ""]
    lines += [f"![accuracy versus T]({ACCURACY_PLOT})", ""]
    found = verdicts(rows, reference_dir)
    if found:
        lines += [
            "## Against the published reference",
            "",
            f"Rows whose setting (dataset, architecture, training, evaluation, method options) has a reference "
            f"in `{reference_dir.as_posix()}`: {VERDICT_RULE}",
            "",
            verdict_table(found),
            "",
        ]
    if "top5" in rows and rows["top5"].notna().any():
        lines += ["Top-5 accuracy (%):", "", accuracy_table(rows, "top5"), ""]
    lines += [
        f"## Latency and efficiency at T = {at}",
        "",
        "Per test image. T to x% of ANN: the smallest T of the grid reaching that fraction of the ANN's top-1.",
        "SOPs: events (spikes, pooled spikes, Poisson input) times the synapses each reaches; MACs: dense, for "
        "layers fed analog values (padded border included). NeuroBench's convention differs: a layer whose input "
        "is not in {-1, 0, 1} counts MACs, and only non-zero products count (`spikebench neurobench` puts its "
        "numbers beside these).",
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
    lines += ["## How it was produced", "", provenance_table(rows), "", wall_time_total(rows), ""]
    sources = budget_sources(rows)
    if sources:
        lines += [
            "Budget: ANN epochs plus spiking epochs x T_train x the measured cost of a BPTT step per ANN "
            f"step (`bench/budget.py`; training ratio from {', '.join(sources)}).",
            "",
        ]
    command = shipped_config_command(rows)
    if command:
        lines += [command, ""]
    first = rows.iloc[0]
    seed_sets = sorted(set(rows["seed"].astype(str)))
    seeds = (
        f"seed {seed_sets[0]}" if len(seed_sets) == 1 and "," not in seed_sets[0] else "seeds " + "; ".join(seed_sets)
    )
    lines += [
        f"Model options: {first.get('model_options', '')}; {seeds}; versions: {_versions(first.get('versions'))}.",
        "",
        "Regenerate with `python -m bench.report --results-dir DIR`, DIR the results folder this one is in.",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def _versions(versions) -> str:
    if not isinstance(versions, dict):
        return "?"
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))


def write_index(results_dir: Path) -> Path:
    """`results/README.md`: one line per leaderboard with its best measured method."""
    lines = [
        "# Results",
        "",
        "Every leaderboard below is generated from its `records.jsonl` by `python -m bench.report --results-dir "
        "<this folder>`.",
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
    studies += [results_dir / CLAIMS_NAME] if (results_dir / CLAIMS_NAME).is_file() else []
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


def rebuild_all(
    results_dir: Path, at: int | None = None, sort: str = "method", reference_dir: Path | None = None
) -> list[Path]:
    stores = leaderboard_stores(results_dir)
    paths = [write_leaderboard(store.parent, at, sort, reference_dir) for store in stores]
    # A suite run into a folder of its own (`--results-dir results/<suite>`) wrote that folder's
    # index and claims report: they are rebuilt too, so no report is older than its records.
    for suite in sorted({store.parent.parent for store in stores} - {results_dir}):
        paths += write_summaries(suite, existing_only=True)
    return paths + write_summaries(results_dir)


def write_summaries(results_dir: Path, existing_only: bool = False) -> list[Path]:
    """The folder's index of leaderboards and its claims report (`bench.claims`); with
    `existing_only`, only those of the two that the folder already holds."""
    wanted = {name: not existing_only or (results_dir / name).is_file() for name in ("README.md", "claims.md")}
    claims = write_claims(results_dir) if wanted["claims.md"] else None
    return ([write_index(results_dir)] if wanted["README.md"] else []) + ([claims] if claims else [])


def main(argv: list[str] | None = None) -> int:
    return exit_status(lambda: _run(argv))


def _run(argv: list[str] | None) -> int:
    parser = OneLineArgumentParser(
        description="Regenerate every leaderboard and plot under a results folder from its records."
    )
    parser.add_argument("--results-dir", default="runs", help="the folder to rebuild (default: runs)")
    parser.add_argument(
        "--reference-dir",
        default="results",
        help="published references to compare the rows with (default: results; never the folder being rebuilt)",
    )
    parser.add_argument("--at", type=int, help=f"T of the grid for the efficiency table (default {DEFAULT_AT})")
    parser.add_argument("--sort", default="method", help=f"sort the efficiency table by one of: {', '.join(SORT_KEYS)}")
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        raise UserError(f"results folder {args.results_dir} does not exist; run `python run_all.py` first")
    reference_dir = resolve_reference_dir(args.reference_dir, args.results_dir)
    for path in rebuild_all(Path(args.results_dir), args.at, args.sort, reference_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
