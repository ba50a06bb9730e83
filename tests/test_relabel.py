"""scripts/relabel_rows.py: a row run with an old default gets its variant's label, options and hashes."""

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from relabel_rows import main  # noqa: E402

from bench.config import load_config  # noqa: E402
from bench.runner import plan_methods  # noqa: E402

OLD_OPTIONS = {  # `conversion`'s defaults before it followed Rueckauer et al.
    "normalization": "weight",
    "statistic": "percentile",
    "percentile": 99.9,
    "granularity": "layer",
    "calibration_batches": 8,
    "reset": "subtract",
    "initial_potential": 0.5,
    "input_coding": "poisson",
}


def test_old_default_rows_take_the_variant_label_and_the_hashes_a_run_plans(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    improved = {"percentile_of": "all", "initial_potential": 0.5, "input_coding": "poisson", "readout": "analog"}
    methods = ["ann", {"name": "conversion", "label": "conversion-improved", "options": improved}]
    config.write_text(yaml.safe_dump({"methods": methods}))
    store = tmp_path / "records.jsonl"
    rows = [{"label": "conversion", "method": "conversion", "options": OLD_OPTIONS, "time_steps": t} for t in (1, 4)]
    other = {"label": "ann", "method": "ann", "options": {}, "time_steps": 1}
    store.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in [*rows, other]))
    untouched = store.read_text().splitlines()[-1]

    fill = ["--fill", "percentile_of=all", "--fill", "readout=analog"]
    assert main([str(store), "conversion", "conversion-improved", *fill, "--config", str(config)]) == 0
    planned = next(m for m in plan_methods(load_config(config)) if m.label == "conversion-improved")
    records = [json.loads(line) for line in store.read_text().splitlines()]
    for record in records[:2]:
        assert record["label"] == "conversion-improved"
        assert record["setting_hash"] == planned.setting_hash and record["reference_key"] == planned.reference_key
        assert record["setting"] == planned.setting
    assert store.read_text().splitlines()[-1] == untouched  # other rows byte for byte

    # Options that do not reproduce the config's row are refused, and nothing is written.
    before = store.read_text()
    status = main(
        [
            str(store),
            "conversion-improved",
            "conversion-improved",
            "--fill",
            "readout=spiking_softmax",
            "--config",
            str(config),
        ]
    )
    assert status == 2 and "plans other options than the records ran: ['readout']" in capsys.readouterr().err
    assert store.read_text() == before
