"""The embedded :class:`~zexec.core.ports.Catalog`: SQLite with an FTS5 full-text index.

Packages (CKAN package dicts) are stored as JSON in ``packages`` and their text fields
in the FTS5 table ``packages_fts`` (same rowid). A search turns each term into an FTS5
prefix phrase built from the term's word tokens only (quotes, operators and column
syntax in user input never reach the query language), restricted to a column when the
term has a key; terms without word characters and keys naming extras are applied
afterwards with the shared rules of :mod:`zexec.core.catalog`. Results are ordered by
BM25 rank. One connection, shared by threads under a lock (``check_same_thread=False``),
so an in-memory database is one database.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zexec.core import catalog as rules
from zexec.core.errors import CatalogUnavailable, ConfigurationError

#: The sample datasets shipped with zexec (the default seed).
SAMPLE_DATASETS = Path(__file__).with_name("sample_datasets.json")

#: Package fields indexed as FTS5 columns (the rest is searchable through ``extras``).
FTS_COLUMNS = ("name", "title", "notes", "tags", "organization", "resources", "extras")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS packages (
    pk INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS packages_fts USING fts5(
    {", ".join(FTS_COLUMNS)}, tokenize = 'unicode61 remove_diacritics 2');
"""
_TOKEN = re.compile(r"\w+", re.UNICODE)


def load_seed_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON list of package dicts (or CKAN's ``{"result": {"results": [...]}}``)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read catalog seed file {p}: {exc}") from None
    if isinstance(data, Mapping):
        data = (data.get("result") or {}).get("results", data.get("results"))
    if not isinstance(data, list) or not all(isinstance(d, Mapping) for d in data):
        raise ConfigurationError(f"catalog seed file {p} must hold a JSON list of datasets")
    return [dict(d) for d in data]


def fts_phrase(term: str) -> str | None:
    """FTS5 prefix phrase for ``term`` made of its word tokens, or None if it has none."""
    tokens = _TOKEN.findall(term)
    return '"' + " ".join(tokens) + '"*' if tokens else None


def _row_text(pkg: Mapping[str, Any]) -> tuple[str, ...]:
    extras = rules.extras_dict(pkg)
    extra_text = " ".join(
        f"{k} {v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in extras.items()
    )
    return (
        str(pkg.get("name") or ""),
        str(pkg.get("title") or ""),
        str(pkg.get("notes") or ""),
        " ".join(rules.tag_names(pkg)),
        " ".join(rules.field_text(pkg, "organization")),
        " ".join(rules.field_text(pkg, "resources")),
        extra_text,
    )


class SqliteCatalog:
    """Full-text dataset catalog in one SQLite file (``path``; ``""``/``":memory:"``
    keeps it in memory). ``seed``: packages loaded when the catalog is empty."""

    def __init__(self, path: str = "", seed: Iterable[Mapping[str, Any]] | None = None) -> None:
        target = path or ":memory:"
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.executescript(_SCHEMA)
        if seed is not None and self.count() == 0:
            self.load(seed)

    # ------------------------------------------------------------------ maintenance

    def load(self, packages: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace packages (by ``name``); returns how many were stored."""
        n = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for pkg in packages:
                    name = str(pkg.get("name") or "").strip()
                    if not name:
                        raise ConfigurationError(f"dataset #{n + 1} has no name")
                    old = self._db.execute("SELECT pk FROM packages WHERE name=?", (name,))
                    row = old.fetchone()
                    if row is not None:
                        self._db.execute("DELETE FROM packages_fts WHERE rowid=?", row)
                        self._db.execute("DELETE FROM packages WHERE pk=?", row)
                    cur = self._db.execute(
                        "INSERT INTO packages(name, doc) VALUES (?, ?)",
                        (name, json.dumps(dict(pkg), default=str)),
                    )
                    self._db.execute(
                        f"INSERT INTO packages_fts(rowid, {', '.join(FTS_COLUMNS)}) "
                        f"VALUES (?{', ?' * len(FTS_COLUMNS)})",
                        (cur.lastrowid, *_row_text(pkg)),
                    )
                    n += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM packages").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ the port

    def search(
        self, terms: list[str], keys: list[str | None] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        limit = rules.clamp_limit(limit)
        fields = rules.check_keys(terms, keys)
        parts: list[str] = []
        post: list[tuple[str, str | None]] = []
        for term, field in zip(terms, fields, strict=True):
            phrase = fts_phrase(term)
            if phrase is not None and (field is None or field in FTS_COLUMNS):
                parts.append(f"{field} : {phrase}" if field else phrase)
            if phrase is None or field not in (None, *FTS_COLUMNS):
                post.append((term, field))
        pkgs = self._candidates(parts, None if post else limit)
        out = [
            rules.to_result(p) for p in pkgs if all(rules.term_matches(p, t, f) for t, f in post)
        ]
        return out[:limit]

    def advanced_search(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        limit = rules.clamp_limit(query.get("limit"))
        for item in query.get("filter_list") or []:
            rules.parse_filter(item)  # refuse a malformed filter before searching
        parts = [p for k in rules.keywords(query.get("search_term")) if (p := fts_phrase(k))]
        for qk, col in (("dataset_title", "title"), ("dataset_description", "notes")):
            if query.get(qk) and (p := fts_phrase(str(query[qk]))):
                parts.append(f"{col} : {p}")
        out = []
        for pkg in self._candidates(parts, None):
            if not rules.advanced_matches(pkg, query):
                continue
            res = rules.matching_resources(pkg, query)
            if res is not None and not res:
                continue
            out.append(rules.to_result(pkg, res))
            if len(out) >= limit:
                break
        return out

    def _candidates(self, parts: list[str], limit: int | None) -> list[dict[str, Any]]:
        if parts:
            sql = (
                "SELECT p.doc FROM packages_fts f JOIN packages p ON p.pk = f.rowid "
                "WHERE packages_fts MATCH ? ORDER BY bm25(packages_fts), p.name"
            )
            args: tuple[Any, ...] = (" AND ".join(parts),)
        else:
            sql, args = "SELECT doc FROM packages ORDER BY name", ()
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CatalogUnavailable(f"catalog database error: {exc}") from exc
        return [json.loads(r[0]) for r in rows]
