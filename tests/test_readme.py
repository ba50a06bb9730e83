"""The README's method example is real: it registers, runs and reaches the leaderboard."""

import re
from pathlib import Path

from bench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_method_example_runs(tmp_path, monkeypatch):
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "readme_example_method.py").write_text(example)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["--quiet", "--epochs", "1", "--plugin", "readme_example_method", "--methods", "ann,scaled_threshold",
            "--set", "data.train_subset=64", "--set", "data.test_subset=32", "--set", "model.name=cifar_vgg_tiny",
            "--set", "eval.time_steps=[1,8]", "--results-dir", str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    leaderboard = (tmp_path / "results" / "tiny-imagenette" / "leaderboard.md").read_text()
    assert "| scaled_threshold " in leaderboard
