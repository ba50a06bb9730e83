"""Methods: each file registers one way of getting a spiking network (see `methods.registry`).

Built in: `ann` (reference), `direct` (surrogate-gradient training), `conversion` (ANN-to-SNN).
"""

from methods.registry import (
    ENTRY_POINT_GROUP, MethodEntry, NoOptions, RunContext, get_method, list_methods, load_plugins,
    register_method,
)
from methods import ann  # noqa: F401  (registers the built-in methods)
from methods import direct  # noqa: F401
from methods import conversion  # noqa: F401

__all__ = [
    "ENTRY_POINT_GROUP", "MethodEntry", "NoOptions", "RunContext", "get_method", "list_methods",
    "load_plugins", "register_method",
]
