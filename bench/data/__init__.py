"""Datasets: the registry and loaders (`datasets`), and the data shipped in the package
(`tiny_imagenette`, built by `make_tiny_imagenette`)."""

from bench.data.datasets import (
    DATASETS,
    DEFAULT_DATA_ROOT,
    DatasetInfo,
    DatasetSplits,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "DatasetInfo",
    "DatasetSplits",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
