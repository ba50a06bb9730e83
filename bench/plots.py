"""Plots beside each leaderboard, drawn from the same rows as its tables.

- `accuracy_vs_T.png`: top-1 against T (log scale), the ANN as a dashed ceiling, a band of one
  standard deviation where a row averages several seeds;
- `accuracy_vs_energy.png`: top-1 against estimated energy per image, one point per T;
- `firing_rates.png`: spikes per neuron per step for each layer, at the table's chosen T.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

ACCURACY_PLOT = "accuracy_vs_T.png"
ENERGY_PLOT = "accuracy_vs_energy.png"
FIRING_PLOT = "firing_rates.png"


def save_figure(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    # No software or date stamp: a plot rebuilt from the same records is the same file.
    figure.savefig(path, dpi=110, metadata={"Software": None})


def new_axes():
    """A figure of its own and its axes: matplotlib's object interface, no global backend or pyplot state."""
    figure = Figure(figsize=(7, 4.5))
    return figure, figure.subplots()


def _save_accuracy_against(figure, axes, x_label: str, path: Path) -> None:
    """Top-1 on y against a log-scaled x, grid and legend, saved."""
    axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel("top-1 accuracy (%)")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # a store of failed settings only draws nothing to name
        axes.legend(fontsize=8)
    save_figure(figure, path)


def _groups(rows: pd.DataFrame):
    ok = rows[rows["status"] == "ok"]
    for (label, architecture), group in ok.groupby(["label", "architecture"], sort=False):
        yield f"{label} ({architecture})", group.sort_values("time_steps")


def plot_accuracy(rows: pd.DataFrame, path: Path) -> None:
    figure, axes = new_axes()
    for index, (name, group) in enumerate(_groups(rows)):
        color = f"C{index % 10}"
        if group["family"].iloc[0] == "reference":
            axes.axhline(100 * group["top1"].iloc[0], linestyle="--", color=color, label=f"{name}: ceiling")
            if "seeds" in group and group["seeds"].iloc[0] > 1:
                spread = 100 * group["top1_std"].iloc[0]
                axes.axhspan(
                    100 * group["top1"].iloc[0] - spread, 100 * group["top1"].iloc[0] + spread, color=color, alpha=0.1
                )
        else:
            axes.plot(group["time_steps"], 100 * group["top1"], marker="o", markersize=3, color=color, label=name)
            if "seeds" in group and (group["seeds"] > 1).any():  # the mean over seeds, shaded by one standard deviation
                spread = 100 * group["top1_std"].fillna(0)
                axes.fill_between(
                    group["time_steps"],
                    100 * group["top1"] - spread,
                    100 * group["top1"] + spread,
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
    _save_accuracy_against(figure, axes, "time steps T (log scale)", path)


def plot_energy(rows: pd.DataFrame, path: Path) -> bool:
    if "energy_uj" not in rows or rows["energy_uj"].isna().all():
        return False
    figure, axes = new_axes()
    for index, (name, group) in enumerate(_groups(rows)):
        color = f"C{index % 10}"
        if group["family"].iloc[0] == "reference":
            axes.scatter(
                group["energy_uj"].iloc[:1],
                100 * group["top1"].iloc[:1],
                marker="*",
                s=120,
                color=color,
                label=name,
                zorder=3,
            )
        else:
            axes.plot(
                group["energy_uj"], 100 * group["top1"], marker="o", markersize=3, color=color, label=f"{name}, T grid"
            )
    _save_accuracy_against(figure, axes, "estimated energy per image (µJ, compute only, log scale)", path)
    return True


def plot_firing_rates(rows: pd.DataFrame, time_steps: int, path: Path) -> bool:
    figure, axes = new_axes()
    drawn = False
    for name, group in _groups(rows):
        at_t = group[group["time_steps"] == time_steps]
        if at_t.empty or not isinstance(at_t["firing_rates"].iloc[0], dict) or not at_t["firing_rates"].iloc[0]:
            continue
        rates = at_t["firing_rates"].iloc[0]
        axes.plot(range(len(rates)), list(rates.values()), marker="o", markersize=3, label=name)
        drawn = True
    if not drawn:
        return False
    axes.set_xlabel("spiking layer (input to output)")
    axes.set_ylabel(f"spikes per neuron per step at T={time_steps}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    save_figure(figure, path)
    return True
