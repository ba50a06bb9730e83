"""A run against the published reference: did it reproduce the committed numbers of its setting?

`results/` holds the reference leaderboards; a user's run goes to `runs/`. Two records are of the
same setting when their `reference_key` agrees (dataset, architecture, training and evaluation
settings, method and options; not the seed, label, machine, commit or where the data lies). For
every row of a run whose setting has a reference, at each T both share:

- sigma, the spread one run of the setting shows: the larger of the seed standard deviations
  (the reference's, and the run's when it has several seeds) and the binomial standard deviation
  of an accuracy read on that many test images, sqrt(p (1 - p) / n);
- the gap, run minus reference (means over their seeds), is allowed to be
  z * sigma * sqrt(1 / seeds_run + 1 / seeds_reference), with z chosen so that a row of k values of T
  is flagged by chance in at most 5 % of runs (Bonferroni: z = Phi^-1(1 - 0.025 / k)).

A row is reproduced when its gap stays within that at every T; the row's verdict names the T where
the gap is largest relative to what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import pandas as pd

from bench.records import latest_rows, leaderboard_stores, read_records

FAMILY_WISE_ERROR = 0.05
CHECKOUT_RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Verdict:
    label: str
    architecture: str
    reference: str  # the reference leaderboard's folder, as given
    reference_seeds: int
    time_steps: int  # the T of the largest gap relative to what is allowed
    ours: float
    theirs: float
    allowed: float
    reproduced: bool

    @property
    def gap(self) -> float:
        return self.ours - self.theirs

    def sentence(self) -> str:
        word = "reproduced" if self.reproduced else "NOT reproduced"
        return f"{word}: largest gap {100 * self.gap:+.1f} at T={self.time_steps} (allowed ±{100 * self.allowed:.1f})"

    def short(self) -> str:
        mark = "yes" if self.reproduced else "NO"
        return f"{mark} {100 * self.gap:+.1f} @T={self.time_steps}"


def resolve_reference_dir(reference_dir: str | None, results_dir: str | Path) -> Path | None:
    """The folder of published references for a run writing to `results_dir`, or None: none given,
    none there, or the run is writing into it or a folder inside it (a published run is not
    compared with the references it is one of). The default
    `results` falls back to the checkout's own `results/` when run from another folder."""
    if not reference_dir:
        return None
    folder = Path(reference_dir).expanduser()
    if not folder.is_dir() and reference_dir == "results" and CHECKOUT_RESULTS.is_dir():
        folder = CHECKOUT_RESULTS
    if not folder.is_dir():
        return None
    writing_to = Path(results_dir).expanduser().resolve()
    if writing_to == folder.resolve() or folder.resolve() in writing_to.parents:
        return None  # a run published into the references is not compared with them
    return folder


def reference_rows(reference_dir: Path, keys: set[str]) -> dict[str, tuple[str, pd.DataFrame]]:
    """For each of `keys`, the reference's rows (one per T, averaged over its seeds) and its folder:
    the store with the most seeds of that setting, the newest if tied."""
    found: dict[str, tuple[int, str, str, pd.DataFrame]] = {}
    for store in leaderboard_stores(reference_dir):
        records = read_records(store)
        if records.empty or "reference_key" not in records:
            continue
        records = records[records["reference_key"].isin(keys) & (records["status"] == "ok")]
        for key, group in records.groupby("reference_key"):
            rows = latest_rows(group)
            seeds, newest = int(rows["seeds"].max()), str(group["run_id"].max())
            if key not in found or (seeds, newest) > found[key][:2]:
                found[key] = (seeds, newest, store.parent.as_posix(), rows)
    return {key: (folder, rows) for key, (_, _, folder, rows) in found.items()}


def verdicts(rows: pd.DataFrame, reference_dir: Path | None) -> list[Verdict]:
    """One verdict per row of `rows` (a leaderboard's `latest_rows`) that has a reference."""
    if reference_dir is None or rows.empty or "reference_key" not in rows:
        return []
    ok = rows[(rows["status"] == "ok") & rows["reference_key"].notna()]
    references = reference_rows(reference_dir, set(ok["reference_key"]))
    found = []
    for (label, architecture), group in ok.groupby(["label", "architecture"], sort=False):
        key = group["reference_key"].iloc[0]
        if key not in references:
            continue
        folder, theirs = references[key]
        verdict = _compare(group, theirs, label, architecture, folder)
        if verdict is not None:
            found.append(verdict)
    return found


def _compare(ours: pd.DataFrame, theirs: pd.DataFrame, label: str, architecture: str, folder: str) -> Verdict | None:
    theirs_at = {int(row["time_steps"]): row for _, row in theirs.iterrows()}
    shared = [(int(row["time_steps"]), row) for _, row in ours.iterrows() if int(row["time_steps"]) in theirs_at]
    if not shared:
        return None
    z = NormalDist().inv_cdf(1 - FAMILY_WISE_ERROR / 2 / len(shared))
    worst: tuple[float, int, float, float, float] | None = None
    for t, row in shared:
        other = theirs_at[t]
        sigma = max(
            _seed_spread(other),
            _seed_spread(row),
            _binomial_spread(row["top1"], row.get("test_size")),
            _binomial_spread(other["top1"], other.get("test_size")),
        )
        allowed = z * sigma * math.sqrt(1 / int(row.get("seeds", 1)) + 1 / int(other.get("seeds", 1)))
        gap = row["top1"] - other["top1"]
        ratio = abs(gap) / allowed if allowed > 0 else (0.0 if gap == 0 else math.inf)
        if worst is None or ratio > worst[0]:
            worst = (ratio, t, row["top1"], other["top1"], allowed)
    ratio, t, mine, reference, allowed = worst
    return Verdict(
        label=label,
        architecture=architecture,
        reference=folder,
        reference_seeds=int(theirs_at[t].get("seeds", 1)),
        time_steps=t,
        ours=mine,
        theirs=reference,
        allowed=allowed,
        reproduced=ratio <= 1.0,
    )


def _seed_spread(row) -> float:
    spread = row.get("top1_std")
    return 0.0 if int(row.get("seeds", 1)) < 2 or spread is None or pd.isna(spread) else float(spread)


def _binomial_spread(accuracy: float, images) -> float:
    if images is None or pd.isna(images) or int(images) <= 0:
        return 0.0
    return math.sqrt(accuracy * (1 - accuracy) / int(images))
