"""Records: one JSON line per dataset, method setting, architecture and T, with provenance.

The store is `<results dir>/<dataset>/records.jsonl` (`runs/` for a user's runs, `results/` for the
published references), appended to and never rewritten; pandas reads it with
`pd.read_json(path, lines=True)`. Every table and plot is generated from it, through
`latest_rows`: one row per setting and T, averaged over seeds.

A setting's records are appended in one write under an exclusive lock (`fcntl`), so that
concurrent runs never interleave lines; an append cut short (a kill, a full disk) leaves a last
line without its newline, which `set_aside_torn_tail` moves to `records.jsonl.torn` before the
next run reads the store. A setting is finished when its records cover the whole T grid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import secrets
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.errors import UserError

STORE_NAME = "records.jsonl"
# Rows of a leaderboard in this order: the ANN first, then direct training, hybrid, conversion.
FAMILY_ORDER = {"reference": 0, "direct": 1, "hybrid": 2, "conversion": 3}


def dataset_slug(dataset: str) -> str:
    """A folder name for a dataset: `folder:../data/cifar10-jpeg` -> `folder-cifar10-jpeg`."""
    if dataset.startswith("folder:"):
        dataset = "folder-" + Path(dataset[len("folder:") :].rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-") or "dataset"


def store_path(results_dir: str | Path, dataset: str) -> Path:
    return Path(results_dir) / dataset_slug(dataset) / STORE_NAME


def git_commit(root: Path | None = None) -> str:
    """The commit the code ran at, with `+dirty` when tracked files outside `results/` had changes.

    Results are outputs: a suite appends records and rewrites leaderboards as it goes, which must
    not mark the runs after the first one (another seed, another config) as run from changed code.
    """
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+dirty" if dirty else "")) if commit else "unknown"


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (x{torch.cuda.device_count()} visible)"
    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{processor}, {threads} thread{'' if threads == 1 else 's'}"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "spikebench"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class Provenance:
    """What every record of one run shares: where, when and from what it came."""

    run_id: str
    commit: str
    config_hash: str
    seed: int
    device: str
    hardware: str
    versions: dict[str, str]
    timestamp: str

    @classmethod
    def capture(cls, config_hash: str, seed: int, device: torch.device) -> Provenance:
        now = datetime.now(timezone.utc)
        return cls(
            # Unique even for two runs of one config started in the same second.
            run_id=now.strftime("%Y%m%dT%H%M%SZ") + "-" + config_hash[:6] + "-" + secrets.token_hex(3),
            commit=git_commit(),
            config_hash=config_hash,
            seed=seed,
            device=str(device),
            hardware=hardware(device),
            versions=package_versions(),
            timestamp=now.isoformat(timespec="seconds"),
        )


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on `path` (created if missing) for the block: one writer at a time. A store
    that cannot be opened for writing (read-only, immutable, a full disk) is a `UserError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        opened = path.open("a")
    except OSError as error:
        raise UserError(
            f"cannot write records to {path} ({error.strerror}); make it writable (chmod u+w, chattr -i) "
            "or choose another --results-dir, and run the same command again"
        ) from None
    with opened as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append a setting's records as one write under the store's lock."""
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    try:
        with locked(path) as store:
            store.write(text)
            store.flush()
            os.fsync(store.fileno())
    except OSError as error:
        raise UserError(
            f"cannot write records to {path} ({error.strerror}); free space or fix permissions "
            f"there (about {len(text)} bytes are needed) and run the same command again"
        ) from None


@contextlib.contextmanager
def claimed(store: Path, setting_hash: str):
    """Claim a setting for this process while the block runs: yields False (skip it) when a live
    process of this machine holds it already, so that two runs on one store never do it twice."""
    folder = store.parent / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    claim = folder / f"{setting_hash}.pid"
    for _ in range(2):
        try:
            descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if _holder_alive(claim):
                yield False
                return
            claim.unlink(missing_ok=True)  # left by a process that died: take it over
    else:
        yield False
        return
    with os.fdopen(descriptor, "w") as handle:
        handle.write(str(os.getpid()))
    try:
        yield True
    finally:
        claim.unlink(missing_ok=True)


def _holder_alive(claim: Path) -> bool:
    try:
        pid = int(claim.read_text().strip() or 0)
    except (OSError, ValueError):
        return True  # being written right now
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_aside_torn_tail(path: Path) -> str | None:
    """Move a last line without its newline (an interrupted append) to `<store>.torn`; say so."""
    if not path.is_file():
        return None
    with locked(path):
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        with path.with_name(path.name + ".torn").open("ab") as torn:
            torn.write(data[cut:] + b"\n")
        with path.open("r+b") as store:
            store.truncate(cut)
    return (
        f"{path} ended in an interrupted append ({len(data) - cut} bytes without a newline); "
        f"moved them to {path.name}.torn, the setting it belonged to runs again"
    )


def read_records(path: Path) -> pd.DataFrame:
    """All records of a store as a DataFrame (empty when there is no store yet). A torn last line
    (an append cut short) is left out."""
    if path.is_dir():
        raise UserError(f"records store {path} is a folder, not a file; move it away")
    if not path.is_file():
        return pd.DataFrame()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read records from {path} ({error}); fix or move that file") from None
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]  # `tail` is "" when the file ends with its newline
    rows = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path} line {number} is not valid JSON; remove or repair that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is JSON but not a record (an object); remove that line")
        rows.append(row)
    del tail  # an interrupted append: `set_aside_torn_tail` moves it before the next run
    return pd.DataFrame(rows)


def finished_settings(path: Path, time_steps: list[int] | None = None) -> dict[str, str]:
    """Settings the store already holds a result for: `setting_hash` -> "ok" when their records
    cover every T of `time_steps` (all T seen if None), or "failed" when the newest attempt failed."""
    frame = read_records(path)
    if frame.empty or "setting_hash" not in frame:
        return {}
    done: dict[str, str] = {}
    for setting, group in frame.groupby("setting_hash"):
        ok = group[group["status"] == "ok"]
        needed = set(time_steps) if time_steps is not None else set(ok["time_steps"].dropna().astype(int))
        if not ok.empty and needed <= set(ok["time_steps"].dropna().astype(int)):
            done[setting] = "ok"
        elif ok.empty and (group["status"] == "failed").any():
            done[setting] = "failed"
    return done


def leaderboard_stores(results_dir: Path) -> list[Path]:
    """Every suite's records under `results_dir`: `<dataset>/records.jsonl`, and one level deeper for
    a suite written to a folder of its own (`--results-dir results/<suite>`); the gradient study
    keeps its own report."""
    stores = list(results_dir.glob(f"*/{STORE_NAME}")) + list(results_dir.glob(f"*/*/{STORE_NAME}"))
    return sorted(store for store in stores if "gradients" not in store.relative_to(results_dir).parts)


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
        return single.assign(
            seeds=1,
            top1_std=float("nan"),
            top5_std=float("nan"),
            correct_by_seed=[_bits_by_seed(single.loc[[index]]) for index in single.index],
        )
    rows = []
    for _, at_t in ok.groupby("time_steps", sort=True):
        row = at_t.loc[at_t["run_id"].idxmax()].copy()
        row["correct_by_seed"] = _bits_by_seed(at_t)
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


def _bits_by_seed(records: pd.DataFrame) -> dict[int, tuple[str, int]]:
    """{seed: (per-image correctness bits, number of test images)} of records at one T, where kept."""
    if "correct_bits" not in records:
        return {}
    return {
        int(record["seed"]): (record["correct_bits"], int(record["test_size"]))
        for _, record in records.iterrows()
        if isinstance(record.get("correct_bits"), str) and not pd.isna(record.get("test_size"))
    }
