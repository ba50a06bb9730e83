"""The built-in methods, one file each, written against `bench.api` like any plugin.

`ann` (reference), `direct` (surrogate-gradient training), `conversion` (ANN-to-SNN). Importing
this package registers them; `bench.api` does so on the first method lookup.
"""

from methods import ann, conversion, direct  # noqa: F401  (registers the built-in methods)
