"""Records: one JSON line per dataset, method setting, architecture and T, with provenance.

The store is `results/<dataset>/records.jsonl`, appended to and never rewritten; pandas reads
it with `pd.read_json(path, lines=True)`. Every table and plot is generated from it.

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
    """An exclusive lock on `path` (created if missing) for the block: one writer at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
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
