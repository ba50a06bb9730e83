"""Config loading: YAML into dataclasses, dotted overrides, refusal of unknown keys and bad values."""

from pathlib import Path

import pytest

from bench.config import RunConfig, load_config
from bench.errors import UserError


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_and_yaml_values(tmp_path):
    config = load_config(
        write(
            tmp_path, "train:\n  epochs: 3\nmethods: [ann, {name: direct, label: d4, options: {time_steps_train: 4}}]\n"
        )
    )
    assert isinstance(config, RunConfig)
    assert config.train.epochs == 3 and config.train.optimizer == "sgd"
    assert [spec.display_name for spec in config.methods] == ["ann", "d4"]
    assert config.methods[1].options == {"time_steps_train": 4}


def test_overrides_are_parsed_as_yaml(tmp_path):
    config = load_config(None, ["train.lr=0.05", "eval.time_steps=[8,1,4]", "data.test_subset=null", "model.width=2"])
    assert config.train.lr == 0.05
    assert config.eval.time_steps == [1, 4, 8]
    assert config.data.test_subset is None
    assert config.model.width == 2.0


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=-1", "train.epochs must be 0 or more"),
        ("train.optimizer=adam", "train.optimizer must be one of sgd, adamw"),
        ("train.epochs=three", "train.epochs must be of type int"),
        ("train.epoch=3", "unknown key train.'epoch'"),
        ("nosection.key=1", "unknown key 'nosection'"),
        ("eval.time_steps=[0,4]", "eval.time_steps must be a non-empty list of positive integers"),
        ("data.batch_size=true", "data.batch_size must be of type int"),
        ("notakeyvalue", "must look like section.key=value"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(override, message):
    with pytest.raises(UserError) as error:
        load_config(None, [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_duplicate_method_labels_are_refused():
    with pytest.raises(UserError, match="distinct `label`"):
        load_config(None, ["methods=[direct, direct]"])


def test_section_hash_changes_with_the_section_only():
    base = load_config(None)
    other_train = load_config(None, ["train.epochs=1"])
    assert base.section_hash("data", "model") == other_train.section_hash("data", "model")
    assert base.section_hash("train") != other_train.section_hash("train")


STUDY_CONFIGS = ("gradients.yaml", "depth_study.yaml")  # the studies' own configs, tested by their tests
SUITE_CONFIGS = [
    p for p in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")) if p.name not in STUDY_CONFIGS
]


@pytest.mark.parametrize("path", SUITE_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    """Paper-scale configs cannot run here, but their keys, values, methods and names must be right."""
    from bench.architectures import list_architectures
    from bench.data import list_datasets
    from bench.runner import plan_methods

    config = load_config(path)
    assert config.data.name.startswith("folder:") or config.data.name in list_datasets()
    assert config.model.name in list_architectures()
    assert plan_methods(config)


def test_the_depth_study_config_is_valid_at_every_depth():
    from bench.studies.depth import DEFAULT_CONFIG, load_depth_config

    config = load_depth_config(DEFAULT_CONFIG)  # builds and validates the suite config of every depth
    assert config.architectures == ["cifar_resnet8", "cifar_resnet20", "cifar_resnet32", "cifar_resnet56"]
    gradient = config.gradient_config("cifar_resnet56")
    assert [s.label for s in gradient.all_settings()] == [
        "triangular w=1 h=1 BN on",
        "triangular w=4 h=1 BN on",
        "triangular w=0.05 h=1 BN on",
        "triangular w=1 h=1 BN off",
    ]
