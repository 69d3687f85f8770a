"""Stores behind one interface, chosen by URL (``JOBWATCH_STORE_URL``)."""

from __future__ import annotations

import os

from urllib.parse import unquote, urlsplit

from jobwatch.core.errors import ValidationError
from jobwatch.core.records import VANISHED, Delivery, OutboxEntry, PollRecord, TrackedJob, Transition
from jobwatch.store.base import Store

__all__ = ["VANISHED", "Delivery", "OutboxEntry", "PollRecord", "Store", "TrackedJob", "Transition", "has_schema",
           "open_store"]


def open_store(url: str, *, migrate: bool = True) -> Store:
    """``sqlite:///relative/or/absolute.db``, ``sqlite:///:memory:``, or ``mysql://user:pass@host:port/db``."""
    if not isinstance(url, str) or "://" not in url:
        raise ValidationError("store_url", _safe(url), "expected sqlite:///path or mysql://user:pass@host:port/db")
    scheme = url.split("://", 1)[0].lower()
    _refuse_query_options(url)
    store: Store
    if scheme == "sqlite":
        from jobwatch.store.sqlite import SqliteStore

        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValidationError("store_url", url, "sqlite URL needs a path: sqlite:///path/to/file.db")
        store = SqliteStore(unquote(path))
    elif scheme in ("mysql", "mysql+pymysql", "mariadb"):
        from jobwatch.store.mysql import MysqlStore

        parts = urlsplit(url)
        if not parts.hostname or not parts.path.strip("/"):
            raise ValidationError("store_url", _safe(url), "mysql URL needs a host and a database name")
        store = MysqlStore(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.strip("/"),
        )
    else:
        raise ValidationError("store_url", _safe(url), "unknown scheme; use sqlite:// or mysql://")
    if migrate:
        store.migrate()
    return store


def has_schema(store: Store) -> bool:
    """Whether ``store`` (opened with ``migrate=False``) holds jobwatch's tables, asked of the catalog without
    creating anything: a read-only command must not set a store up as a side effect of looking at it."""
    from jobwatch.store.mysql import MysqlStore

    if isinstance(store, MysqlStore):
        probe = ("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                 "AND table_name = 'jw_meta'")
    else:
        probe = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jw_meta'"
    with store._tx(write=False) as cur:  # type: ignore[attr-defined]  # both SQL stores have it
        cur.execute(probe)
        row = cur.fetchone()
    return bool(row and row[0])


def sqlite_has_schema(path: str) -> bool:
    """Whether the existing SQLite file at ``path`` holds jobwatch's tables, read through a read-only connection
    (opening it as a store would set WAL mode, which writes the header of an empty file)."""
    import sqlite3
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jw_meta'"
                               ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:  # not a database at all: no store of ours either
        return False
    return bool(row and row[0])


def _refuse_query_options(url: str) -> None:
    """No option is read from a URL's query (``?mode=ro``, ``?ssl=1``): refuse them rather than silently give
    the operator a store other than the one they asked for."""
    query = url.split("?", 1)[1] if "?" in url else ""
    names = [part.split("=", 1)[0] for part in query.split("&") if part]
    if names or "?" in url:
        shown = ", ".join(repr(unquote(n)) for n in names) or "an empty query"
        raise ValidationError("store_url", _safe(url),
                              f"unknown query option(s) {shown}: a store URL takes no options")


def _safe(url: object) -> object:
    """The URL without its password, for error messages."""
    if not isinstance(url, str):
        return url
    try:
        p = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if p.password:
        return url.replace(f":{p.password}@", ":***@", 1)
    return url
