"""A :class:`~zexec.core.ports.Catalog` over a CKAN site's ``package_search`` action (httpx).

Terms become a Solr query in which user text is data, never query syntax: each term a
quoted phrase (``"term"`` or ``field:"term"``, quotes and backslashes escaped), names
in field positions backslash-escaped, parts joined with ``AND``. CKAN's
answer is then filtered with the shared rules of :mod:`zexec.core.catalog` (every term
must occur as text, as the NDP EP API does) and converted to datasource dicts.
Transport failures and non-success answers raise
:class:`~zexec.core.errors.CatalogUnavailable`; CKAN's "Search Query Error" raises
:class:`~zexec.core.errors.InvalidQuery`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from zexec.core import catalog as rules
from zexec.core.errors import CatalogUnavailable, InvalidQuery

_SOLR_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/&|])')
#: Canonical package fields as CKAN's Solr schema names them.
_SOLR_FIELD = {"organization": "organization", "tags": "tags", "resources": "res_name"}


def solr_escape(value: str) -> str:
    """``value`` with every Solr query special character backslash-escaped."""
    return _SOLR_SPECIAL.sub(r"\\\1", value)


def solr_phrase(value: str) -> str:
    """``value`` as a quoted Solr phrase: words inside are never operators."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _solr_term(term: str, field: str | None) -> str:
    value = solr_phrase(term.strip())
    if field is None:
        return value
    name = _SOLR_FIELD.get(field, field if field in ("name", "title", "notes") else None)
    return f"{name}:{value}" if name else f"extras_{solr_escape(field)}:{value}"


class CkanCatalog:
    """Searches ``base_url`` (the CKAN site root) with ``/api/3/action/package_search``.

    ``client`` may be given (tests, connection reuse); otherwise one is created and
    closed by :meth:`close`. ``api_key`` is sent as CKAN's ``Authorization`` header.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("CKAN catalog needs a base URL (ZEXEC_EP_CKAN_URL)")
        self.url = base_url.rstrip("/") + "/api/3/action/package_search"
        headers = {"Authorization": api_key} if api_key else {}
        self._own = client is None
        self._client = client or httpx.Client(timeout=timeout, headers=headers)
        if client is not None and api_key:
            self._client.headers.update(headers)

    def close(self) -> None:
        if self._own:
            self._client.close()

    # ------------------------------------------------------------------ the port

    def search(
        self, terms: list[str], keys: list[str | None] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        limit = rules.clamp_limit(limit)
        fields = rules.check_keys(terms, keys)
        pairs = [(t, f) for t, f in zip(terms, fields, strict=True) if t.strip()]
        q = " AND ".join(_solr_term(t, f) for t, f in pairs) or "*:*"
        pkgs = self._package_search(q, [], rows=max(limit, 100))
        out = [
            rules.to_result(p) for p in pkgs if all(rules.term_matches(p, t, f) for t, f in pairs)
        ]
        return out[:limit]

    def advanced_search(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        limit = rules.clamp_limit(query.get("limit"))
        parts = [_solr_term(k, None) for k in rules.keywords(query.get("search_term"))]
        fq = []
        for item in query.get("filter_list") or []:
            field, value = rules.parse_filter(item)
            fq.append(_solr_term(value, field))
        if query.get("dataset_name"):
            fq.append(f"name:{solr_phrase(str(query['dataset_name']))}")
        if query.get("owner_org"):
            fq.append(f"organization:{solr_phrase(str(query['owner_org']))}")
        for qk, field in (("dataset_title", "title"), ("dataset_description", "notes")):
            if query.get(qk):
                parts.append(_solr_term(str(query[qk]), field))
        if query.get("resource_format"):
            fq.append(f"res_format:{solr_phrase(str(query['resource_format']))}")
        pkgs = self._package_search(" AND ".join(parts) or "*:*", fq, rows=max(limit, 100))
        out = []
        for pkg in pkgs:
            if not rules.advanced_matches(pkg, query):
                continue
            res = rules.matching_resources(pkg, query)
            if res is not None and not res:
                continue
            out.append(rules.to_result(pkg, res))
        return out[:limit]

    # ------------------------------------------------------------------ HTTP

    def _package_search(self, q: str, fq: list[str], rows: int) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"q": q, "rows": min(rows, rules.MAX_LIMIT)}
        if fq:
            params["fq"] = " AND ".join(fq)
        try:
            resp = self._client.get(self.url, params=params)
        except httpx.HTTPError as exc:
            raise CatalogUnavailable(f"CKAN catalog is unreachable: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CatalogUnavailable(
                f"CKAN catalog answered HTTP {resp.status_code} without a JSON action result"
            )
        if not body.get("success"):
            err = body.get("error") or {}
            msg = err.get("message") or err.get("__type") or f"HTTP {resp.status_code}"
            if err.get("__type") in ("Search Query Error", "Validation Error"):
                raise InvalidQuery(f"CKAN refused the search: {msg}")
            raise CatalogUnavailable(f"CKAN catalog failed: {msg}")
        results = (body.get("result") or {}).get("results")
        if not isinstance(results, list):
            raise CatalogUnavailable("CKAN catalog answered without a result list")
        return [r for r in results if isinstance(r, dict)]
