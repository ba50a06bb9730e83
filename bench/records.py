"""Records: one JSON line per dataset, method setting, architecture and T, with provenance.

The store is `results/<dataset>/records.jsonl`, appended to and never rewritten; pandas reads
it with `pd.read_json(path, lines=True)`. Every table and plot is generated from it.
"""

from __future__ import annotations

import json
import platform
import re
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
    return f"{processor}, {torch.get_num_threads()} threads"


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
            run_id=now.strftime("%Y%m%dT%H%M%SZ") + "-" + config_hash[:6],
            commit=git_commit(),
            config_hash=config_hash,
            seed=seed,
            device=str(device),
            hardware=hardware(device),
            versions=package_versions(),
            timestamp=now.isoformat(timespec="seconds"),
        )


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as store:
        for record in records:
            store.write(json.dumps(record, sort_keys=True) + "\n")


def read_records(path: Path) -> pd.DataFrame:
    """All records of a store as a DataFrame (empty when there is no store yet)."""
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path} line {number} is not valid JSON; remove or repair that line") from None
    return pd.DataFrame(rows)


def finished_settings(path: Path) -> set[str]:
    """The `setting_hash` of every setting the store already holds a finished result for."""
    frame = read_records(path)
    if frame.empty or "setting_hash" not in frame:
        return set()
    return set(frame.loc[frame["status"] == "ok", "setting_hash"])
