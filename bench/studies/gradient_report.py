"""The gradient-flow study's report, made from its records alone (see `bench.studies.gradients`).

`write_report(study_dir)` reads `records.jsonl`, keeps the newest study (the records sharing the
newest run's `study_hash`, newest record per setting) and writes `report.md` plus two plots:
`grad_vs_depth.png` (mean weight-gradient norm per layer in forward order, log y, one line per
setting) and `grad_vs_time.png` (gradient norm reaching the chosen neuron layer's input current
at each time step). Rebuilding from the same records gives byte-identical files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tabulate import tabulate

from bench.errors import UserError
from bench.plots import save_figure
from bench.records import read_records

DEPTH_PLOT = "grad_vs_depth.png"
TIME_PLOT = "grad_vs_time.png"
FLAGS = ("exploding", "vanishing", "stable", "silent")


def newest_study(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of the newest study, newest per setting, BN on first, then by shape, width, height."""
    newest = max(records, key=lambda r: (r["timestamp"], r["run_id"]))["study_hash"]
    chosen: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: (r["timestamp"], r["run_id"])):
        if record["study_hash"] == newest:
            chosen[record["setting"]] = record
    return sorted(chosen.values(), key=lambda r: (not r["batch_norm"], r["surrogate"], r["width"], r["height"]))


def load_study(study_dir: Path) -> list[dict[str, Any]]:
    frame = read_records(study_dir / "records.jsonl")
    if frame.empty:
        raise UserError(f"no gradient-study records in {study_dir}; run python -m bench.studies.gradients first")
    return newest_study([{key: _clean(value) for key, value in row.items()} for row in frame.to_dict("records")])


def _clean(value: Any) -> Any:
    # pandas turns a missing number into NaN; the records mean None.
    return None if isinstance(value, float) and math.isnan(value) else value


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def settings_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "setting",
        "shape",
        "width",
        "height",
        "BN",
        "firing mean / last",
        "first-layer grad",
        "last-layer grad",
        "ratio first/last",
        "flag",
        "loss step 1",
        "loss after",
        "status",
    ]
    table = []
    for row in rows:
        losses = row["losses"] or [None]
        rates = row["firing_rates"]
        firing = f"{sum(rates) / len(rates):.3f} / {rates[-1]:.3f}" if rates else "n/a"
        table.append(
            [
                row["setting"],
                row["surrogate"],
                f"{row['width']:g}",
                f"{row['height']:g}",
                "on" if row["batch_norm"] else "off",
                firing,
                _number(row["first_layer_grad"]),
                _number(row["last_layer_grad"]),
                _number(row["ratio"]),
                f"**{row['flag']}**",
                _number(losses[0], 4),
                _number(row["loss_after"], 4) if row["status"] == "ok" else "diverged",
                row["status"],
            ]
        )
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def mean_time_norms(row: dict[str, Any]) -> list[float | None]:
    steps = [step for step in row["time_grad_norms"] if all(v is not None for v in step)]
    return [sum(column) / len(steps) for column in zip(*steps)] if steps else []


def time_table(rows: list[dict[str, Any]]) -> str:
    time_steps = max(len(mean_time_norms(row)) for row in rows)
    headers = ["setting"] + [f"t={t + 1}" for t in range(time_steps)] + ["ratio t=1 / t=T"]
    table = []
    for row in rows:
        norms = mean_time_norms(row)
        ratio = norms[0] / norms[-1] if norms and norms[-1] else None
        table.append(
            [row["setting"]] + [_number(v) for v in norms] + [""] * (time_steps - len(norms)) + [_number(ratio)]
        )
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _panels(rows: list[dict[str, Any]]):
    groups = [(bn, [r for r in rows if r["batch_norm"] == bn]) for bn in (True, False)]
    groups = [(bn, group) for bn, group in groups if group]
    figure = Figure(figsize=(6.5 * len(groups) + 3, 5))
    axes = figure.subplots(1, len(groups), squeeze=False)
    return figure, list(zip(axes[0], groups))


def _positive(values: list[float]) -> list[float]:
    # A zero gradient has no place on a log axis: the line breaks there.
    return [value if value > 0 else float("nan") for value in values]


def _style(index: int) -> dict[str, Any]:
    return {"color": matplotlib.colormaps["tab20"](index % 20), "linestyle": ("-", "--", ":", "-.")[index // 20 % 4]}


def plot_depth(rows: list[dict[str, Any]], path: Path) -> None:
    figure, panels = _panels(rows)
    for axes, (bn, group) in panels:
        for index, row in enumerate(group):
            norms = _positive(row["mean_layer_grad_norms"])
            axes.plot(range(1, len(norms) + 1), norms, marker="o", markersize=2, label=row["setting"], **_style(index))
        axes.set_yscale("log")
        axes.set_xlabel("weight layer, forward order (1 = first conv)")
        axes.set_title(f"BN on input currents {'on' if bn else 'off'}")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    panels[0][0].set_ylabel("weight gradient norm (mean over steps)")
    save_figure(figure, path)


def plot_time(rows: list[dict[str, Any]], path: Path) -> None:
    figure, panels = _panels(rows)
    for axes, (bn, group) in panels:
        for index, row in enumerate(group):
            norms = _positive(mean_time_norms(row))
            axes.plot(range(1, len(norms) + 1), norms, marker="o", markersize=3, label=row["setting"], **_style(index))
        axes.set_yscale("log")
        axes.set_xlabel(f"time step t (input current of {group[0]['time_layer']})")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"BN on input currents {'on' if bn else 'off'}")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    panels[0][0].set_ylabel("gradient norm at step t (mean over steps)")
    save_figure(figure, path)


def write_report(study_dir: Path) -> Path:
    """Regenerate `report.md` and both plots in `study_dir` from its records."""
    rows = load_study(study_dir)
    plot_depth(rows, study_dir / DEPTH_PLOT)
    plot_time(rows, study_dir / TIME_PLOT)
    path = study_dir / "report.md"
    path.write_text("\n".join(_header(rows) + _body(rows) + _provenance(rows)))
    return path


def _header(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]
    direct, train = first["direct"], first["train"]
    counts = {flag: sum(row["flag"] == flag for row in rows) for flag in FLAGS}
    neuron = f"{direct['neuron'].upper()} (leak {direct['leak']:g})" if direct["neuron"] == "lif" else "IF"
    return [
        f"# Gradient flow: {first['dataset']}, {first['architecture']}",
        "",
        f"Surrogate-gradient training of the `direct` SNN: {len(first['layers'])} weight layers "
        f"(first `{first['layers'][0]}`, "
        f"last `{first['layers'][-1]}`), {neuron} neurons, threshold {direct['threshold']:g}, reset {direct['reset']}"
        f"{' (detached)' if direct['detach_reset'] else ''}, T = {direct['time_steps_train']}, "
        f"{direct['encoder']} encoding. "
        f"Each setting trains {first['steps']} steps ({train['optimizer']}, lr {train['lr']:g}, "
        f"batch {first['batch_size']}) "
        f"from the same initialization (seed {first['seed']}) on the same batches.",
        "",
        "Gradient norms are per weight tensor, averaged over the steps. A setting is **exploding** when the "
        f"first layer's norm is more than {first['exploding_ratio']:g} times the last layer's (or a gradient "
        f"became non-finite), **vanishing** below {first['vanishing_ratio']:g} times, **stable** in between, "
        "**silent** when no spike reaches the last layer (its weight gradient is zero, the ratio undefined). "
        "`firing` is spikes per neuron per step in the first forward, averaged over the neuron layers and "
        "in the last one; `loss after` is the cross-entropy on a held-out batch after the steps "
        "(ln 10 = 2.303 is chance).",
        "",
        f"**{counts['exploding']} exploding, {counts['vanishing']} vanishing, {counts['stable']} stable, "
        f"{counts['silent']} silent** of {len(rows)} settings.",
        "",
    ]


def _body(rows: list[dict[str, Any]]) -> list[str]:
    return [
        settings_table(rows),
        "",
        f"![gradient norm against depth]({DEPTH_PLOT})",
        "",
        f"## Gradient per time step at `{rows[0]['time_layer']}`",
        "",
        "Norm of the gradient reaching that layer's input current at each time step (mean over steps). "
        "Early steps feed every later step through the membrane potential, so a surrogate that amplifies "
        "grows their gradient with T.",
        "",
        time_table(rows),
        "",
        f"![gradient per time step]({TIME_PLOT})",
        "",
    ]


def _provenance(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]
    runs = sorted({row["run_id"] for row in rows})
    commits = sorted({row["commit"] for row in rows})
    versions = ", ".join(f"{name} {version}" for name, version in sorted(first["versions"].items()))
    data = first["data"]
    commands = sorted({row["command"] for row in rows})
    return [
        "## How it was produced",
        "",
        *[f"    {command}" for command in commands],
        "",
        f"Data: {data['train_subset']} training images (augment {data['augment']}); "
        f"{sum(row['wall_s'] for row in rows):.0f} s in all on {first['hardware']}, {first['device']}.",
        "",
        f"Runs: {', '.join(runs)}; commit {', '.join(commits)}; versions: {versions}.",
        "",
        "Regenerate from the records with `python -m bench.studies.gradients --report-only "
        f"--dataset {first['dataset']} "
        f"--arch {first['architecture']}`.",
        "",
    ]
