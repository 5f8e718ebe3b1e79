"""Dataset catalog over a CKAN site's ``package_search`` action (httpx)."""

from zexec.adapters.catalog_ckan.catalog import CkanCatalog, solr_escape, solr_phrase

__all__ = ["CkanCatalog", "solr_escape", "solr_phrase"]
