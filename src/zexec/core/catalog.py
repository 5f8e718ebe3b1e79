"""Catalog domain logic shared by every :class:`~zexec.core.ports.Catalog` adapter (pure).

A catalog stores CKAN package dicts (``name``, ``title``, ``notes``, ``tags`` as
``[{"name": ...}]`` or strings, ``organization`` as ``{"name", "title"}``, ``resources``,
``extras`` as ``[{"key", "value"}]`` or a dict) and answers with NDP datasource dicts
(:func:`to_result`). The functions here decide what a field name means, how a
``field:value`` filter and the resource fields of an advanced search apply, so the
SQLite and CKAN adapters agree on results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from zexec.core.errors import InvalidQuery

#: Field names users may give as search keys, mapped to the canonical package field.
FIELD_ALIASES = {
    "name": "name",
    "dataset_name": "name",
    "title": "title",
    "dataset_title": "title",
    "notes": "notes",
    "description": "notes",
    "dataset_description": "notes",
    "tags": "tags",
    "tag": "tags",
    "organization": "organization",
    "owner_org": "organization",
    "resources": "resources",
}

#: Resource fields of an advanced search and the resource key each compares.
RESOURCE_FIELDS = {
    "resource_url": "url",
    "resource_name": "name",
    "resource_description": "description",
    "resource_format": "format",
}

MAX_LIMIT = 1000


def canonical_key(key: str | None) -> str | None:
    """None for "search everywhere" (None, ``""``, ``"null"``), else the package field
    (an unknown key names an extras entry and is returned as given)."""
    if key is None or not key.strip() or key.strip().lower() == "null":
        return None
    return FIELD_ALIASES.get(key.strip().lower(), key.strip())


def extras_dict(pkg: Mapping[str, Any]) -> dict[str, Any]:
    """A package's extras as a dict; JSON-encoded ``mapping``/``processing`` decoded."""
    raw = pkg.get("extras") or {}
    if isinstance(raw, list):
        out = {
            str(e.get("key")): e.get("value")
            for e in raw
            if isinstance(e, Mapping) and e.get("key") is not None
        }
    elif isinstance(raw, Mapping):
        out = {str(k): v for k, v in raw.items()}
    else:
        out = {}
    for k in ("mapping", "processing"):
        if isinstance(out.get(k), str):
            try:
                out[k] = json.loads(out[k])
            except ValueError:
                pass
    return out


def tag_names(pkg: Mapping[str, Any]) -> list[str]:
    names = []
    for t in pkg.get("tags") or []:
        n = t.get("name") if isinstance(t, Mapping) else t
        if isinstance(n, str) and n:
            names.append(n)
    return names


def org_name(pkg: Mapping[str, Any]) -> str | None:
    org = pkg.get("organization")
    if isinstance(org, Mapping):
        return org.get("name") or None
    if isinstance(org, str) and org:
        return org
    owner = pkg.get("owner_org")
    return owner if isinstance(owner, str) and owner else None


def field_text(pkg: Mapping[str, Any], field: str) -> list[str]:
    """The text values of a canonical field (or extras key) of a package."""
    if field == "tags":
        return tag_names(pkg)
    if field == "organization":
        org = pkg.get("organization")
        vals = [org_name(pkg) or ""]
        if isinstance(org, Mapping) and org.get("title"):
            vals.append(str(org["title"]))
        return [v for v in vals if v]
    if field == "resources":
        return [
            str(r.get(k))
            for r in pkg.get("resources") or []
            if isinstance(r, Mapping)
            for k in ("name", "description", "url", "format")
            if r.get(k)
        ]
    if field in ("name", "title", "notes", "id"):
        v = pkg.get(field)
        return [str(v)] if v not in (None, "") else []
    v = extras_dict(pkg).get(field, pkg.get(field))
    if v is None:
        return []
    return [v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)]


def term_matches(pkg: Mapping[str, Any], term: str, field: str | None) -> bool:
    """Case-insensitive substring match of ``term`` in ``field`` (None: anywhere)."""
    needle = term.strip().lower()
    if not needle:
        return True
    if field is None:
        hay = json.dumps(pkg, default=str, ensure_ascii=False).lower()
        return needle in hay
    return any(needle in v.lower() for v in field_text(pkg, field))


def parse_filter(item: str) -> tuple[str, str]:
    """``"field:value"`` -> (canonical field, value); raises InvalidQuery otherwise."""
    if not isinstance(item, str) or ":" not in item:
        raise InvalidQuery(f"filter {item!r} must look like field:value (e.g. tags:ocean)")
    key, value = item.split(":", 1)
    field = canonical_key(key)
    if field is None or not value.strip():
        raise InvalidQuery(f"filter {item!r} must look like field:value (e.g. tags:ocean)")
    return field, value.strip()


def filter_matches(pkg: Mapping[str, Any], field: str, value: str) -> bool:
    """Exact (case-insensitive) value of a field; for tags: one of the tags."""
    want = value.lower()
    return any(v.lower() == want for v in field_text(pkg, field))


def keywords(search_term: str | None) -> list[str]:
    """The comma-separated keywords of an advanced search's ``search_term``."""
    return [k.strip() for k in (search_term or "").split(",") if k.strip()]


def matching_resources(pkg: Mapping[str, Any], query: Mapping[str, Any]) -> list[dict] | None:
    """The package's resources matching every resource field of ``query``; None when
    the query has no resource field (then every resource is kept)."""
    wanted = {rk: query[qk] for qk, rk in RESOURCE_FIELDS.items() if query.get(qk)}
    if not wanted:
        return None
    out = []
    for r in pkg.get("resources") or []:
        if not isinstance(r, Mapping):
            continue
        ok = all(
            str(r.get(k) or "").lower() == str(v).lower()
            if k == "format"
            else str(r.get(k) or "") == str(v)
            for k, v in wanted.items()
        )
        if ok:
            out.append(dict(r))
    return out


def advanced_matches(pkg: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether a package satisfies the non-resource fields of an advanced search."""
    name = query.get("dataset_name")
    if name and str(pkg.get("name", "")).lower() != str(name).lower():
        return False
    org = query.get("owner_org")
    if org and (org_name(pkg) or "").lower() != str(org).lower():
        return False
    for qk, field in (("dataset_title", "title"), ("dataset_description", "notes")):
        if query.get(qk) and not term_matches(pkg, str(query[qk]), field):
            return False
    if not all(term_matches(pkg, k, None) for k in keywords(query.get("search_term"))):
        return False
    for item in query.get("filter_list") or []:
        if not filter_matches(pkg, *parse_filter(item)):
            return False
    return True


def to_result(pkg: Mapping[str, Any], resources: Iterable[Mapping] | None = None) -> dict:
    """The NDP datasource dict for a CKAN package (``resources``: a subset to show)."""
    res = (pkg.get("resources") or []) if resources is None else resources
    return {
        "id": str(pkg.get("id") or pkg.get("name") or ""),
        "name": str(pkg.get("name") or ""),
        "title": str(pkg.get("title") or pkg.get("name") or ""),
        "owner_org": org_name(pkg),
        "description": pkg.get("notes"),
        "resources": [
            {
                "id": str(r.get("id") or ""),
                "url": str(r.get("url") or ""),
                "name": str(r.get("name") or ""),
                "description": r.get("description"),
                "format": r.get("format"),
            }
            for r in res
            if isinstance(r, Mapping)
        ],
        "extras": extras_dict(pkg),
        "tags": tag_names(pkg),
    }


def clamp_limit(limit: Any, default: int = 100) -> int:
    """A result limit within 1..MAX_LIMIT; raises InvalidQuery for a non-integer."""
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidQuery(f"limit must be an integer, not {limit!r}")
    return max(1, min(MAX_LIMIT, limit))


def check_keys(terms: list[str], keys: list[str | None] | None) -> list[str | None]:
    """One canonical key per term; raises InvalidQuery when the counts differ."""
    if keys is None or len(keys) == 0:
        return [None] * len(terms)
    if len(keys) != len(terms):
        raise InvalidQuery(
            "the number of keys must match the number of terms, or keys must be omitted"
        )
    return [canonical_key(k) for k in keys]
