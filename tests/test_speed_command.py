"""`python -m bench.speed` end to end on a tiny setting: the table, the JSON and the Markdown."""

import json

from bench import speed


def test_speed_command_writes_ratios_it_measured(tmp_path, capsys):
    output = tmp_path / "perf.md"
    status = speed.main(["--image-size", "8", "--batch-size", "4", "--time-max", "6", "--repeats", "1",
                         "--memory-steps", "", "--variants", "plain,fused", "--output", str(output)])
    assert status == 0
    result = json.loads(output.with_suffix(".json").read_text())
    for variant in ("plain", "fused"):
        training, curve = result["training"][variant], result["curve"][variant]
        assert training["ratio"] == training["best_s"] / (4 * result["training"]["ann"]["best_s"])
        assert curve["ratio"] == curve["seconds"] / (6 * result["curve"]["ann"]["forward_s"])
    text = output.read_text()
    assert f"**{result['training']['fused']['ratio']:.3f}**" in text
    assert "Memory allocator:" in text
    assert "training / 4 ANN steps" in capsys.readouterr().out


def test_speed_command_refuses_an_unknown_variant(capsys):
    assert speed.main(["--variants", "warp", "--memory-steps", ""]) == 2
    assert "unknown --variants warp" in capsys.readouterr().err
