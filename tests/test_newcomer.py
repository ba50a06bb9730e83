"""A newcomer's run is their own: it goes to runs/, leaves results/ alone, and names the reference
and its verdict; an installed package runs the same default from any folder."""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from tests.test_cli import TINY

ROOT = Path(__file__).resolve().parents[1]
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", ".pytest_cache", "*.egg-info", ".cache")


def checksums(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run(command: list[str], cwd: Path, **extra) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, **extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_fresh_copy_runs_into_runs_and_compares_with_the_reference(tmp_path):
    copy = tmp_path / "spikebench"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    tiny = [*TINY, "--set", f"cache_dir={tmp_path / 'cache'}"]
    # A maintainer publishes a reference of the tiny setting, as the README says ...
    run([sys.executable, "run_all.py", *tiny, "--results-dir", "results"], copy)
    published = checksums(copy / "results")
    # ... and a newcomer runs the same setting with no results flag.
    result = run([sys.executable, "run_all.py", *tiny], copy)
    assert checksums(copy / "results") == published  # nothing under results/ changed
    leaderboard = copy / "runs" / "tiny-imagenette" / "leaderboard.md"
    assert leaderboard.is_file() and (copy / "runs" / "tiny-imagenette" / "records.jsonl").is_file()
    assert "reference: results/tiny-imagenette; gap in points at the worst T" in result.stdout
    check = result.stdout.split("reference: results/tiny-imagenette")[1]
    for label in ("ann", "direct", "conversion"):
        line = next(line for line in check.splitlines() if line.strip().startswith(f"{label} "))
        assert "reproduced" in line and "NOT" not in line, line  # the same machine and seed: identical numbers
    assert "## Against the published reference" in leaderboard.read_text()


def test_every_package_of_the_checkout_is_installed():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 or newer
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for top in ("bench", "methods")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed == found | {"bench.configs"}


def _builds_wheels() -> bool:
    """Whether this environment's setuptools builds wheels by itself (70.1 or newer, or `wheel` present)."""
    try:
        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def test_an_installed_package_runs_the_default_from_an_empty_folder(tmp_path):
    """`pip install .` into a fresh venv (its dependencies borrowed from this environment, so that
    nothing is downloaded), then `spikebench run` from an empty folder."""
    venv = tmp_path / "venv"
    # No pip or setuptools of its own: this environment's pip installs into it (`--python`), and the
    # build uses this environment's setuptools.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    # A path line in a .pth file: this environment's packages (torch, ...) without its .pth files,
    # so that the checkout's editable install does not leak into the fresh one.
    (Path(purelib.stdout.strip()) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    install = ["--python", str(python), "install", "--quiet", "--no-deps", str(source)]
    if _builds_wheels():  # else pip fetches a setuptools that does into an isolated build environment
        install.insert(-1, "--no-build-isolation")
    run([sys.executable, "-m", "pip", *install], tmp_path)
    shutil.rmtree(source)  # the installed package must stand on its own
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    environment = {**os.environ, "PYTHONPATH": ""}
    where = run([str(python), "-c", "import bench; print(bench.__file__)"], empty, env=environment)
    assert where.stdout.strip().startswith(str(venv))
    result = run(
        [str(venv / "bin" / "spikebench"), "run", *TINY, "--set", f"cache_dir={tmp_path / 'cache'}"],
        empty,
        env=environment,
    )
    leaderboard = empty / "runs" / "tiny-imagenette" / "leaderboard.md"
    assert leaderboard.is_file(), result.stdout
    text = leaderboard.read_text()
    for label in ("ann", "direct", "conversion"):  # the shipped default config's methods
        assert f"| {label} " in text
    assert "leaderboard: runs/tiny-imagenette/leaderboard.md" in result.stdout
