"""One small registry for every kind of named entry: surrogates, datasets, architectures, methods.

    SURROGATES = Registry("surrogate")
    SURROGATES.add("triangular", triangular)          # or @SURROGATES.decorator("triangular")
    SURROGATES.get("triangular")                      # unknown names list the known ones
    SURROGATES.names("tri*")                          # shell-style wildcards
    SURROGATES.origin("triangular")                   # "bench.spiking.surrogates:triangular"

A duplicate name is refused with the origin of the first entry. Entries may be lazy: a
`"module:object"` string imported on first use, and a registry with an `entry_point_group` loads
the entry points of installed packages the first time it is asked for a name (each entry point
names a module, or an object in one, whose import registers entries). `loaders` run once, before that, for
entries that must be imported from elsewhere (the built-in methods).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bench.errors import UserError

Value = TypeVar("Value")


@dataclass(frozen=True)
class _Entry(Generic[Value]):
    value: Value | None
    target: str | None  # "module:object" of a lazy entry, imported on first use
    origin: str


class Registry(Generic[Value]):
    """Named entries of one kind (see the module docstring)."""

    def __init__(
        self, kind: str, *, entry_point_group: str | None = None, loaders: tuple[Callable[[], object], ...] = ()
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._loaders = loaders
        self._loaded = False
        self._entries: dict[str, _Entry[Value]] = {}

    def add(self, name: str, value: Value, *, origin: str | None = None) -> Value:
        """Register `value` under `name`; a name that exists already is refused. The built-in and
        installed entries load first, so a plugin that reuses one of their names is the one refused."""
        self._load()
        self._refuse_duplicate(name)
        self._entries[name] = _Entry(value, None, origin or describe(value))
        return value

    def add_lazy(self, name: str, target: str) -> None:
        """Register `"module:object"`, imported the first time `name` is asked for."""
        if ":" not in target:
            raise ValueError(f"a lazy {self.kind} is 'module:object', got {target!r}")
        self._load()
        self._refuse_duplicate(name)
        self._entries[name] = _Entry(None, target, target)

    def decorator(self, name: str | None = None) -> Callable[[Value], Value]:
        """`@registry.decorator("name")` registers the decorated object (default: its `__name__`)."""

        def register(value: Value) -> Value:
            return self.add(name or value.__name__, value)

        return register

    def get(self, name: str) -> Value:
        self._load()
        if name not in self._entries:
            known = ", ".join(self.names()) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {known}")
        entry = self._entries[name]
        if entry.target is not None:
            module, _, attribute = entry.target.partition(":")
            value = getattr(importlib.import_module(module), attribute)
            entry = self._entries[name] = _Entry(value, None, entry.origin)
        return entry.value

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names that match a shell-style wildcard, sorted."""
        self._load()
        return sorted(fnmatch.filter(self._entries, pattern))

    def origin(self, name: str) -> str:
        """Where the entry was defined: `module:qualified_name`, or the lazy target."""
        self.get(name)
        return self._entries[name].origin

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def _refuse_duplicate(self, name: str) -> None:
        if name in self._entries:
            raise UserError(
                f"{self.kind} {name!r} is already registered (by {self._entries[name].origin}); "
                f"register it under another name"
            )

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for loader in self._loaders:
            loader()
        if self.entry_point_group:
            for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
                load_entry_point(entry_point, self.kind)


def load_entry_point(entry_point: importlib.metadata.EntryPoint, kind: str) -> None:
    """Import a plugin's entry point; a broken plugin is the user's to fix, named in one line."""
    try:
        entry_point.load()  # importing its module registers what it defines
    except Exception as error:  # noqa: BLE001 (a plugin can fail in any way on import)
        raise UserError(
            f"the {kind} plugin {entry_point.name!r} ({entry_point.value}) failed to load: "
            f"{type(error).__name__}: {error}; fix or uninstall that package"
        ) from None


def describe(value: object) -> str:
    """`module:qualified_name` of a function or class (the origin of a registry entry)."""
    module = getattr(value, "__module__", None) or type(value).__module__
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}:{name}"
