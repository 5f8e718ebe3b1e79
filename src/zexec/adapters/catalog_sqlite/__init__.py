"""Embedded dataset catalog: SQLite FTS5, seeded from a JSON file of CKAN-style packages."""

from zexec.adapters.catalog_sqlite.catalog import (
    SAMPLE_DATASETS,
    SqliteCatalog,
    load_seed_file,
)

__all__ = ["SAMPLE_DATASETS", "SqliteCatalog", "load_seed_file"]
