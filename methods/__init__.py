"""The built-in methods, one file each, written against `bench.api` like any plugin.

`ann` (reference), `direct` (surrogate-gradient training, with tdBN and PLIF options), `tet`, `plif`,
`conversion` (ANN-to-SNN), `qcfs`, `calibration`, `hybrid`. Importing this package registers
them; `bench.api` does so on the first method lookup.
"""

from methods import ann, calibration, conversion, direct, hybrid, plif, qcfs, tet  # noqa: F401  (registers them)
