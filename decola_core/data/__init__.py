"""Datasets: the catalog of named sets (readers, transforms and samplers build on it)."""

from decola_core.data.catalog import BUILTIN_DATASETS, DatasetCatalog, DatasetSpec

__all__ = ["BUILTIN_DATASETS", "DatasetCatalog", "DatasetSpec"]
