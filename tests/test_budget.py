"""Training budgets in ANN-epoch equivalents, by hand on made-up speed studies."""

import json

from bench.budget import ann_epoch_equivalents, training_ratios


def speed_study(folder, architecture, fused, compiled, allocator="the system's default"):
    settings = {"architecture": architecture, "allocator": allocator, "device": "cpu"}
    training = {"fused": {"ratio": fused}, "compiled": {"ratio": compiled}}
    (folder / f"perf_{architecture}_{len(allocator)}.json").write_text(
        json.dumps({"settings": settings, "training": training})
    )


def test_each_family_s_budget_in_ann_epochs(tmp_path):
    speed_study(tmp_path, "netA", fused=1.5, compiled=1.25)
    speed_study(tmp_path, "netA", fused=9.0, compiled=9.0, allocator="LD_PRELOAD=jemalloc")  # not the default
    training_ratios.cache_clear()
    conversion = {"architecture": "netA", "epochs": 60, "time_steps_train": 0}
    assert ann_epoch_equivalents(conversion, tmp_path) == "60"
    direct = {"architecture": "netA", "epochs": 8, "time_steps_train": 4}
    assert ann_epoch_equivalents(direct, tmp_path) == "48"  # 8 * 4 * 1.5
    assert ann_epoch_equivalents({**direct, "compile_neurons": True}, tmp_path) == "40"  # 8 * 4 * 1.25
    hybrid = {**direct, "epochs": 62, "notes": {"ann_epochs": 60, "finetune_epochs": 2}}
    assert ann_epoch_equivalents(hybrid, tmp_path) == "72"  # 60 + 2 * 4 * 1.5
    assert ann_epoch_equivalents({**direct, "architecture": "netB"}, tmp_path) == "32 step-epochs"
    training_ratios.cache_clear()
