"""Training budgets in one unit: ANN-epoch equivalents, so that rows of different families compare by compute.

An ANN epoch counts 1. A spiking epoch at T_train steps counts T_train times the measured cost of
one BPTT step per ANN step of the same network, the training ratio of `python -m bench.studies.speed`
(`results/perf*.json`, read by architecture; the run's system allocator, the `compiled` variant for
rows trained with `compile_neurons`, else `fused`):

    ANN epochs + spiking epochs * T_train * ratio

A conversion row counts the epochs of the ANN it converts; hybrid its ANN's epochs plus its
fine-tuning's (`notes.ann_epochs`, `notes.finetune_epochs`). Where no speed study of the
architecture exists the spiking part is shown as epochs * T_train step-epochs, unconverted.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd

PERF_DIR = Path(__file__).resolve().parents[1] / "results"


@functools.cache
def training_ratios(folder: Path = PERF_DIR) -> dict[tuple[str, str], tuple[float, str]]:
    """{(architecture, variant): (ratio, file name)} of the speed studies in `folder`."""
    ratios: dict[tuple[str, str], tuple[float, str]] = {}
    for path in sorted(folder.glob("perf*.json")):
        try:
            study = json.loads(path.read_text())
            settings = study["settings"]
        except (OSError, ValueError, KeyError):
            continue
        if settings.get("allocator") != "the system's default" or settings.get("device") != "cpu":
            continue
        for variant in ("fused", "compiled"):
            ratio = study.get("training", {}).get(variant, {}).get("ratio")
            if ratio and (settings["architecture"], variant) not in ratios:
                ratios[(settings["architecture"], variant)] = (float(ratio), path.name)
    return ratios


def ann_epoch_equivalents(record, folder: Path = PERF_DIR) -> str:
    """The record's training budget in ANN-epoch equivalents (module docstring), as table text."""
    epochs, steps = record.get("epochs"), record.get("time_steps_train")
    if epochs is None or pd.isna(epochs):
        return ""
    notes = record.get("notes") if isinstance(record.get("notes"), dict) else {}
    steps = 0 if steps is None or pd.isna(steps) else int(steps)
    if steps == 0:
        return f"{int(epochs)}"
    ann_epochs = int(notes.get("ann_epochs", 0))
    spiking_epochs = int(notes.get("finetune_epochs", int(epochs) - ann_epochs))
    variant = "compiled" if record.get("compile_neurons") else "fused"
    found = training_ratios(folder).get((record.get("architecture"), variant))
    if found is None:
        unconverted = f"{spiking_epochs * steps} step-epochs"
        return f"{ann_epochs} + {unconverted}" if ann_epochs else unconverted
    ratio, _ = found
    return f"{ann_epochs + spiking_epochs * steps * ratio:.0f}"


def budget_sources(rows: pd.DataFrame, folder: Path = PERF_DIR) -> list[str]:
    """The speed-study files the budgets of `rows` were converted with."""
    used = set()
    for _, row in rows.iterrows():
        variant = "compiled" if row.get("compile_neurons") else "fused"
        found = training_ratios(folder).get((row.get("architecture"), variant))
        if found and row.get("time_steps_train"):
            used.add(f"{found[1]} ({row['architecture']}, {variant}: {found[0]:.2f})")
    return sorted(used)
