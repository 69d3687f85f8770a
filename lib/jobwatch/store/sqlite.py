"""The embedded default store: SQLite in WAL mode, safe for several processes on one host.

Writes take the database lock up front (``BEGIN IMMEDIATE``), so a claim's select-then-update cannot interleave
with another process's; readers are not blocked by WAL. SQLite's "database is locked" after the busy timeout is
reported as :class:`StoreUnavailable` (a retry can cure it).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Any, Iterator

from jobwatch.core.errors import StoreError, StoreUnavailable
from jobwatch.store.children_sql import SQLITE_SCHEMA
from jobwatch.store.sql import SqlStore

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS jw_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS jw_jobs (
        region TEXT NOT NULL, bucket TEXT NOT NULL, job_id TEXT NOT NULL,
        state TEXT, active INTEGER NOT NULL DEFAULT 1, job_json TEXT, tags_json TEXT,
        first_seen REAL NOT NULL, last_seen REAL, last_change REAL, next_poll_at REAL NOT NULL,
        poll_interval REAL NOT NULL DEFAULT 0, error_count INTEGER NOT NULL DEFAULT 0, last_error TEXT,
        lease_owner TEXT, lease_expires REAL, version INTEGER NOT NULL DEFAULT 0,
        pending_state TEXT, pending_count INTEGER NOT NULL DEFAULT 0,
        stalled INTEGER NOT NULL DEFAULT 0, stall_notified_at REAL,
        transitions INTEGER NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0, job_fp TEXT,
        PRIMARY KEY (region, bucket, job_id))""",
    # a claim's order: due time, then the order jobs were tracked in (schema 3; version 2 indexed due time only)
    "CREATE INDEX IF NOT EXISTS jw_jobs_claim ON jw_jobs (active, next_poll_at, first_seen)",
    # failed polls, for the status page's timeline (created on every migrate: older stores gain it in place)
    """CREATE TABLE IF NOT EXISTS jw_poll_errors (
        id INTEGER PRIMARY KEY AUTOINCREMENT, region TEXT NOT NULL, bucket TEXT NOT NULL, job_id TEXT NOT NULL,
        at REAL NOT NULL, message TEXT)""",
    "CREATE INDEX IF NOT EXISTS jw_poll_errors_job ON jw_poll_errors (region, bucket, job_id, at)",
    """CREATE TABLE IF NOT EXISTS jw_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        region TEXT NOT NULL, bucket TEXT NOT NULL, job_id TEXT NOT NULL, seq INTEGER NOT NULL,
        from_state TEXT, to_state TEXT NOT NULL, observed_at REAL NOT NULL, service_time REAL,
        code TEXT, message TEXT,
        UNIQUE (region, bucket, job_id, seq))""",
    """CREATE TABLE IF NOT EXISTS jw_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        region TEXT NOT NULL, bucket TEXT NOT NULL, job_id TEXT NOT NULL, from_state TEXT, to_state TEXT,
        observed_at REAL NOT NULL, job_json TEXT, tags_json TEXT, created_at REAL NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
        lease_owner TEXT, lease_expires REAL, last_error TEXT, delivered_at REAL, detail_json TEXT)""",
    "CREATE INDEX IF NOT EXISTS jw_outbox_due ON jw_outbox (status, next_attempt_at)",
    """CREATE TABLE IF NOT EXISTS jw_deliveries (
        notice_id INTEGER NOT NULL, sink TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        last_error TEXT, updated_at REAL NOT NULL, PRIMARY KEY (notice_id, sink))""",
    """CREATE TABLE IF NOT EXISTS jw_watermarks (
        region TEXT NOT NULL, bucket TEXT NOT NULL, created_after REAL NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (region, bucket))""",
)
_SCHEMA += (
    # status-page sessions logged out before their cookie expired (every instance refuses them)
    "CREATE TABLE IF NOT EXISTS jw_revoked_sessions (nonce TEXT PRIMARY KEY, until_at REAL NOT NULL)",
)
_SCHEMA += SQLITE_SCHEMA  # schema version 2: children of batch jobs


class SqliteStore(SqlStore):
    schema = _SCHEMA
    migrations = {3: ("DROP INDEX IF EXISTS jw_jobs_due",)}

    def __init__(self, path: str, *, busy_timeout: float = 30.0) -> None:
        super().__init__()
        self.path = path
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                d = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(d, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=OFF")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: {exc}") from None
            self._conn = conn
        return self._conn

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        with self._lock:
            conn = self._connection()
            cur = conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(f"SQLite store {self.path!r}: {exc}") from None
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite store {self.path!r}: {exc}") from None
                raise
            finally:
                cur.close()

    def _insert_ignore(self, table: str, columns: str, n: int) -> str:
        return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({','.join('?' * n)})"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
