"""The TencentDB for MySQL store (tested against MariaDB), for several function instances sharing one store.

Claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent instances take disjoint batches without waiting
on each other. Connection faults (refused, gone away, lost mid-query) and lock timeouts or deadlocks become
:class:`StoreUnavailable`; the connection is dropped and reopened on next use.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from jobwatch.core.errors import StoreError, LockConflict, StoreUnavailable
from jobwatch.core.redact import Secret
from jobwatch.store.children_sql import MYSQL_SCHEMA
from jobwatch.store.sql import _UPDATE_STEADY, JOB_COLUMNS, OUTBOX_COLUMNS, SqlStore

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS jw_meta (k VARCHAR(64) PRIMARY KEY, v VARCHAR(255) NOT NULL) ENGINE=InnoDB",
    """CREATE TABLE IF NOT EXISTS jw_jobs (
        region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, job_id VARCHAR(128) NOT NULL,
        state VARCHAR(32), active TINYINT NOT NULL DEFAULT 1, job_json MEDIUMTEXT, tags_json TEXT,
        first_seen DOUBLE NOT NULL, last_seen DOUBLE, last_change DOUBLE, next_poll_at DOUBLE NOT NULL,
        poll_interval DOUBLE NOT NULL DEFAULT 0, error_count INT NOT NULL DEFAULT 0, last_error TEXT,
        lease_owner VARCHAR(128), lease_expires DOUBLE, version BIGINT NOT NULL DEFAULT 0,
        pending_state VARCHAR(32), pending_count INT NOT NULL DEFAULT 0,
        stalled TINYINT NOT NULL DEFAULT 0, stall_notified_at DOUBLE,
        transitions INT NOT NULL DEFAULT 0, polls INT NOT NULL DEFAULT 0, job_fp VARCHAR(32),
        PRIMARY KEY (region, bucket, job_id), KEY jw_jobs_claim (active, next_poll_at, first_seen)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    # failed polls, for the status page's timeline (created on every migrate: older stores gain it in place)
    """CREATE TABLE IF NOT EXISTS jw_poll_errors (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL,
        job_id VARCHAR(128) NOT NULL, at DOUBLE NOT NULL, message TEXT,
        KEY jw_poll_errors_job (region, bucket, job_id, at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS jw_history (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, job_id VARCHAR(128) NOT NULL, seq INT NOT NULL,
        from_state VARCHAR(32), to_state VARCHAR(32) NOT NULL, observed_at DOUBLE NOT NULL, service_time DOUBLE,
        code VARCHAR(255), message TEXT,
        UNIQUE KEY jw_history_seq (region, bucket, job_id, seq)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS jw_outbox (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, idem_key VARCHAR(255) NOT NULL, kind VARCHAR(32) NOT NULL,
        region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, job_id VARCHAR(128) NOT NULL,
        from_state VARCHAR(32), to_state VARCHAR(32), observed_at DOUBLE NOT NULL, job_json MEDIUMTEXT,
        tags_json TEXT, created_at DOUBLE NOT NULL, status VARCHAR(16) NOT NULL, attempts INT NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE, lease_owner VARCHAR(128), lease_expires DOUBLE, last_error TEXT,
        delivered_at DOUBLE, detail_json TEXT,
        UNIQUE KEY jw_outbox_key (idem_key), KEY jw_outbox_due (status, next_attempt_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS jw_deliveries (
        notice_id BIGINT NOT NULL, sink VARCHAR(128) NOT NULL, status VARCHAR(16) NOT NULL, attempts INT NOT NULL,
        last_error TEXT, updated_at DOUBLE NOT NULL, PRIMARY KEY (notice_id, sink)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS jw_watermarks (
        region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, created_after DOUBLE NOT NULL,
        updated_at DOUBLE NOT NULL, PRIMARY KEY (region, bucket)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)
_SCHEMA += (
    # status-page sessions logged out before their cookie expired (every instance refuses them)
    "CREATE TABLE IF NOT EXISTS jw_revoked_sessions (nonce VARCHAR(64) PRIMARY KEY, until_at DOUBLE NOT NULL) "
    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
)
_SCHEMA += MYSQL_SCHEMA  # schema version 2: children of batch jobs

# Client/server errors a retry can cure: can't connect, gone away, lost connection, lock wait timeout, deadlock.
_JOIN_ROWS = 500


class _Joined:
    """A keyed UPDATE of sql.py (``... WHERE region=? AND bucket=? AND job_id=? AND lease_owner=? AND <checks>``)
    as one statement over many rows of one bucket and owner: a derived table of the rows' own values, joined to
    jw_jobs by its primary key. The bucket and the owner are the same for every row, so they are sent once, not
    per row: MariaDB's time to parse the derived table grows with the values in it (9 per row took 15 ms per
    300 rows; 5 per row, about half).

    ``STRAIGHT_JOIN`` reads the derived table first and looks each row up by the primary key (``eq_ref``), so
    InnoDB locks exactly the named rows (record locks, no gaps), one by one in the derived table's order, which
    is primary-key order (the rows are sorted): two statements over overlapping rows lock them in the same
    order and cannot deadlock. (One UPDATE naming 500 job IDs with CASE, tried before, let the optimizer choose
    its plan and deadlocked concurrent pollers, error 1213.) The per-row checks (the lease compare-and-set:
    owner and version) stay in the WHERE, per row; the caller compares the rows changed with the rows given,
    as for the row-by-row statement (every matched row changes: ``version=version+1``)."""

    def __init__(self, names: tuple[str, ...], assign: str, where: str) -> None:
        self.names = names  # the statement's parameters in sql.py's order; "r", "b", "j", "o" must be among them
        self.r, self.b, self.j, self.o = (names.index(c) for c in ("r", "b", "j", "o"))
        self.own = tuple(i for i, c in enumerate(names) if c not in ("r", "b", "o"))
        self.assign, self.where = assign, where
        self._cache: dict[int, str] = {}

    def groups(self, rows: Sequence[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, Any, Any], list[tuple[Any, ...]]]]:
        """(region, bucket, owner) -> the rows' own values, sorted by job ID."""
        out: dict[tuple[Any, Any, Any], list[tuple[Any, ...]]] = {}
        for row in rows:
            out.setdefault((row[self.r], row[self.b], row[self.o]), []).append(row)
        for key, group in out.items():
            group.sort(key=lambda row: row[self.j])
            yield key, [tuple(row[i] for i in self.own) for row in group]

    def statement(self, n: int) -> str:
        sql = self._cache.get(n)
        if sql is None:
            cols = [self.names[i] for i in self.own]
            first = "SELECT " + ", ".join(f"%s AS {c}" for c in cols)
            rest = " UNION ALL SELECT " + ", ".join(["%s"] * len(cols))
            sql = (f"UPDATE ({first}{rest * (n - 1)}) AS t STRAIGHT_JOIN jw_jobs AS w "
                   f"ON w.region=%s AND w.bucket=%s AND w.job_id=t.j SET {self.assign} "
                   f"WHERE w.lease_owner=%s AND {self.where}")
            self._cache[n] = sql
        return sql


# Keyed by the statement of sql.py each replaces, with the same parameters in the same order.
_JOINED: dict[str, _Joined] = {
    _UPDATE_STEADY: _Joined(("ls", "np", "pi", "r", "b", "j", "o", "v"),
                            "w.last_seen=t.ls, w.next_poll_at=t.np, w.poll_interval=t.pi, w.lease_owner=NULL, "
                            "w.lease_expires=NULL, w.version=w.version+1, w.polls=w.polls+1", "w.version=t.v"),
}

_TRANSIENT = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
_LOCK_CONFLICTS = {1205, 1213}  # lock wait timeout, deadlock: the transaction was rolled back


class MysqlStore(SqlStore):
    # The driver is an optional dependency: `config check` imports it, `jobwatch package` adds the extra.
    extra = "mysql"
    modules = ("pymysql",)
    placeholder = "%s"
    schema = _SCHEMA
    # MySQL has no IF [NOT] EXISTS for indexes: a second instance's "duplicate key name" / "can't drop" is no error
    migrations = {3: ("ALTER TABLE jw_jobs ADD INDEX jw_jobs_claim (active, next_poll_at, first_seen)",
                      "ALTER TABLE jw_jobs DROP INDEX jw_jobs_due")}

    def __init__(self, *, host: str, port: int, user: str, password: str | Secret, database: str,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0) -> None:
        super().__init__()
        self.host, self.port, self.user, self.database = host, port, user, database
        self._password = password if isinstance(password, Secret) else Secret(password)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"MysqlStore({self.user}@{self.host}:{self.port}/{self.database})"

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                import pymysql
            except ImportError:
                raise StoreError("the mysql store needs PyMySQL: pip install 'ci-jobwatch[mysql]'") from None
            try:
                self._conn = pymysql.connect(
                    host=self.host, port=self.port, user=self.user, password=self._password.reveal(),
                    database=self.database, autocommit=False, charset="utf8mb4",
                    connect_timeout=self._connect_timeout, read_timeout=self._read_timeout,
                    write_timeout=self._read_timeout,
                )
            except pymysql.MySQLError as exc:
                raise self._map(exc) from None
        return self._conn

    def _map(self, exc: Exception) -> StoreError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        where = f"mysql store {self.host}:{self.port}/{self.database}"
        text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
        text = text.replace(self._password.reveal(), "***") if self._password.reveal() else text
        if code in _LOCK_CONFLICTS:
            return LockConflict(f"{where}: error {code}: {text}")
        if code in _TRANSIENT or code is None:
            return StoreUnavailable(f"{where}: error {code}: {text}")
        return StoreError(f"{where}: error {code}: {text}")

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        import pymysql

        with self._lock:
            conn = self._connection()
            try:
                cur = conn.cursor()
            except pymysql.MySQLError as exc:
                self._drop()
                raise self._map(exc) from None
            try:
                yield cur
                conn.commit()
            except BaseException as exc:
                try:
                    conn.rollback()
                except Exception:
                    self._drop()
                if isinstance(exc, (pymysql.MySQLError, OSError)):
                    mapped = self._map(exc)
                    if isinstance(mapped, StoreUnavailable):
                        self._drop()
                    raise mapped from None
                raise
            finally:
                try:
                    cur.close()
                except Exception:
                    pass

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _claim_chunk(self, owner: str, expires: float, region: str, bucket: str,
                     ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """As in sql.py, with the IDs in a derived table joined by primary key (see :class:`_Joined`): an ``IN``
        list of hundreds of IDs may be read as a range over the bucket, which would lock (and wait for) rows
        other pollers hold."""
        ids_sql = "SELECT ? AS j" + " UNION ALL SELECT ?" * (len(ids) - 1)
        return (f"UPDATE ({ids_sql}) AS t STRAIGHT_JOIN jw_jobs AS w ON w.region=? AND w.bucket=? AND w.job_id=t.j "
                "SET w.lease_owner=?, w.lease_expires=?, w.version=w.version+1", (*ids, region, bucket, owner, expires))

    def _update_rows(self, cur: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """The steady write (the bulk of a steady tick) in one statement per 500 rows instead of one per row
        (PyMySQL runs an UPDATE's executemany row by row: a round trip each). See :class:`_Joined` for why this
        locks exactly the named rows, in primary-key order."""
        joined = _JOINED.get(sql)
        if joined is None or len(rows) < 2:
            return super()._update_rows(cur, sql, rows)
        changed = 0
        for (region, bucket, owner), own in joined.groups(rows):
            for i in range(0, len(own), _JOIN_ROWS):
                chunk = own[i:i + _JOIN_ROWS]
                cur.execute(joined.statement(len(chunk)), [v for row in chunk for v in row] + [region, bucket, owner])
                changed += max(cur.rowcount, 0)
        return changed

    def _insert_ignore(self, table: str, columns: str, n: int) -> str:
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES ({','.join(['?'] * n)})"

    def _select_due_for_claim(self, where: str, limit: int, order: str = "next_poll_at", *,
                              by_due: bool = False) -> str:
        """A locking read keeps every row it reads locked until commit, matching or not. Left to itself, MariaDB
        reads a claim of due jobs as ``ref`` on ``active=1`` (every active row, the due-time bound checked after
        the lock): with a sort (a bulk claim, in creation order) it read and locked every active job for the
        claim's transaction, and other instances could neither write the jobs they had polled nor claim. Forced
        onto the claim index it reads the due range only (a bulk claim, sorted, still holds every due job, taken
        or not, until it commits)."""
        hint = " FORCE INDEX (jw_jobs_claim)" if by_due else ""
        return (f"SELECT {JOB_COLUMNS} FROM jw_jobs{hint} WHERE {where} ORDER BY {order} LIMIT {int(limit)} "
                "FOR UPDATE SKIP LOCKED")

    def _select_outbox_for_claim(self, limit: int) -> str:
        return (f"SELECT {OUTBOX_COLUMNS} FROM jw_outbox WHERE status='pending' AND next_attempt_at<=? AND "
                f"(lease_owner IS NULL OR lease_expires<=?) ORDER BY id LIMIT {int(limit)} FOR UPDATE SKIP LOCKED")

    def close(self) -> None:
        with self._lock:
            self._drop()
