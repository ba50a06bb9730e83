"""Method registry: decorator, lookup with helpful errors, wildcards, metadata, entry points."""

import sys
import textwrap
from dataclasses import dataclass

import pytest

import bench.api as registry
from bench.api import get_method, list_methods, register_method
from bench.errors import UserError


def test_builtin_reference_method_and_metadata():
    entry = get_method("ann")
    assert entry.family == "reference"
    assert "ann" in list_methods("a*") and list_methods("zzz*") == []


def test_unknown_method_error_names_the_registered_ones():
    with pytest.raises(UserError) as error:
        get_method("nope")
    assert "unknown method 'nope'" in str(error.value) and "ann" in str(error.value)


def test_duplicate_names_and_bad_families_are_refused():
    with pytest.raises(UserError, match="already registered"):
        register_method("ann", family="reference")(lambda context: None)
    with pytest.raises(ValueError, match="family"):
        register_method("other", family="magic")


def test_options_are_validated_against_the_registered_dataclass():
    @dataclass
    class Options:
        steps: int = 4
        mode: str = "a"

    @register_method("test_options_method", family="direct", options=Options)
    def build(context):
        """A method to test options."""

    entry = get_method("test_options_method")
    assert entry.description == "A method to test options."
    assert entry.defaults == {"steps": 4, "mode": "a"}
    assert entry.make_options({"steps": 8}, "m").steps == 8
    with pytest.raises(UserError, match="unknown key m.'step'"):
        entry.make_options({"step": 8}, "m")
    with pytest.raises(UserError, match="m.steps must be of type int"):
        entry.make_options({"steps": "many"}, "m")


def test_entry_point_plugins_are_found(tmp_path, monkeypatch):
    """A package outside the repo registers through the `spikebench.methods` entry-point group."""
    (tmp_path / "toy_entry_point_plugin.py").write_text(
        textwrap.dedent('''
        from bench.api import register_method

        @register_method("toy_from_entry_point", family="conversion", paper="nobody")
        def build(context):
            """Registered from an installed distribution."""
    ''')
    )
    dist_info = tmp_path / "toy_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[spikebench.methods]\ntoy = toy_entry_point_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.METHODS, "_loaded", False)
    assert "toy_from_entry_point" in list_methods("toy_*")
    assert get_method("toy_from_entry_point").paper == "nobody"
    assert "toy_entry_point_plugin" in sys.modules


def test_missing_plugin_module_is_a_user_error():
    with pytest.raises(UserError, match="cannot be imported"):
        registry.load_plugins(["no_such_plugin_module_xyz"])
