"""The README is real: its method example runs, and its numbers match the committed results."""

import json
import re
from pathlib import Path

from bench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_method_example_runs(tmp_path, monkeypatch):
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "readme_example_method.py").write_text(example)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [
        "--quiet",
        "--epochs",
        "1",
        "--plugin",
        "readme_example_method",
        "--methods",
        "ann,scaled_threshold",
        "--set",
        "data.train_subset=64",
        "--set",
        "data.test_subset=32",
        "--set",
        "model.name=cifar_vgg_tiny",
        "--set",
        "eval.time_steps=[1,8]",
        "--results-dir",
        str(tmp_path / "results"),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    assert "| scaled_threshold " in leaderboard


def test_readme_excerpt_matches_the_committed_records():
    """The README's table is copied from results/: it must say what the records say."""
    from bench.records import read_records
    from bench.report import latest_rows, percent_with_spread

    rows = latest_rows(read_records(README.parent / "results" / "tiny-imagenette" / "records.jsonl"))
    section = README.read_text().split("## Results so far")[1].split("##")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    header = next(line for line in section.splitlines() if line.startswith("| method"))
    steps = [int(cell.strip()[2:]) for cell in header.strip("|").split("|")[1:]]
    assert lines
    for line in lines:
        label, *values = [cell.strip() for cell in line.strip("|").split("|")]
        by_t = {int(row["time_steps"]): row for _, row in rows[rows["label"] == label].iterrows()}
        assert [percent_with_spread(by_t[t]) for t in steps] == values, label


def test_every_config_the_readme_names_exists():
    named = set(re.findall(r"configs/[\w.-]+\.yaml", README.read_text()))
    assert named and all((README.parent / path).is_file() for path in named), named


def test_readme_speed_numbers_match_the_committed_benchmarks():
    results = README.parent / "results"
    perf = json.loads((results / "perf.json").read_text())
    tunables = json.loads((results / "perf_glibc_tunables.json").read_text())
    deeper = json.loads((results / "perf_cifar_resnet20.json").read_text())
    section = " ".join(README.read_text().split("## Speed")[1].split("## Test")[0].split())
    expected = [
        f"cost {perf['training']['fused']['ratio']:.2f} times 4 ANN steps "
        f"({perf['training']['compiled']['ratio']:.2f} compiled)",
        f"curve to T = 1000 {perf['curve']['fused']['ratio']:.2f} times 1000 ANN forwards",
        f"({perf['spikingjelly']['ratio']:.2f} there)",
        f"curve {tunables['curve']['fused']['ratio']:.2f})",
        f"cifar_resnet20, {deeper['training']['fused']['ratio']:.2f} and {deeper['curve']['fused']['ratio']:.2f}",
        f"`{tunables['settings']['allocator']}`",
    ]
    for phrase in expected:
        assert phrase in section, phrase


def test_readme_methods_table_names_each_method_s_reference_implementation():
    from bench.api import get_method, list_methods

    section = README.read_text().split("## Methods")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in section.splitlines() if line.startswith("| `")}
    builtin = [name for name in list_methods() if get_method(name).build.__module__.startswith("methods.")]
    assert set(builtin) <= set(rows), set(builtin) - set(rows)
    for name in builtin:
        reference = get_method(name).reference
        if reference:  # the repository the registry names is the one the table names
            repository = reference.split(":")[0].removeprefix("github.com/")
            assert repository.split("/")[-1] in rows[name], (name, repository)
