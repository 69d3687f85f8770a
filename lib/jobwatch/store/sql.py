"""SQL shared by the SQLite and MySQL stores. Each backend supplies a connection, its placeholders, its claim
statement and its error mapping; the queries and row mapping live here once.

Times are stored as UTC epoch seconds (a double): portable, sortable, and cheap to compare in SQL.
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from jobwatch.core.errors import StoreError
from jobwatch.core.models import Job, JobKey, Notice, NoticeKind, from_iso
from jobwatch.core.records import (Delivery, JobPage, JobQuery, OutboxEntry, PollError, PollRecord, TrackedJob,
                                   Transition, is_final)
from jobwatch.store.base import Store
from jobwatch.store.children_sql import ChildrenSqlMixin

# 2: children of batch jobs (jw_child_progress, jw_children), jw_outbox.detail_json
# 3: jw_jobs.job_fp (the fingerprint of the job's last answer) and the claim index (active, next_poll_at, first_seen)
SCHEMA_VERSION = 3

JOB_COLUMNS = (
    "region, bucket, job_id, state, active, job_json, tags_json, first_seen, last_seen, last_change, next_poll_at, "
    "poll_interval, error_count, last_error, lease_owner, lease_expires, version, pending_state, pending_count, "
    "stalled, stall_notified_at, transitions, polls, job_fp"
)
OUTBOX_COLUMNS = (
    "id, idem_key, kind, region, bucket, job_id, from_state, to_state, observed_at, job_json, tags_json, "
    "created_at, status, attempts, next_attempt_at, last_error, detail_json"
)
# Upgrades of an existing store, by the version they bring it to (new tables need none: CREATE IF NOT EXISTS);
# each dialect adds its own statements for what the two spell differently (indexes).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE jw_outbox ADD COLUMN detail_json TEXT",),
    3: ("ALTER TABLE jw_jobs ADD COLUMN job_fp VARCHAR(32)",),
}
# Errors an upgrade statement may meet when another instance ran it first (or a fresh schema already has it).
# (SQLite: "duplicate column name"; MySQL: "Duplicate column name", "Duplicate key name", "Can't DROP INDEX")
_ALREADY_DONE = ("duplicate column", "duplicate key name", "can't drop")


def ts(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        raise StoreError("naive datetime given to the store; use aware UTC datetimes")
    return dt.timestamp()


def dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), tz=timezone.utc)


class SqlStore(ChildrenSqlMixin, Store):
    """Shared implementation; subclasses set the placeholder and implement the dialect hooks."""

    placeholder = "?"
    schema: Sequence[str] = ()
    migrations: dict[int, tuple[str, ...]] = {}  # the dialect's own upgrade statements, after MIGRATIONS

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- dialect hooks -----------------------------------------------------------------------------------------
    def _connection(self) -> Any:  # a DB-API connection, (re)opened as needed
        raise NotImplementedError

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        """A transaction yielding a cursor; commits on success, rolls back on error, maps driver errors."""
        raise NotImplementedError
        yield

    def _insert_ignore(self, table: str, columns: str, n: int) -> str:
        raise NotImplementedError

    def _select_due_for_claim(self, where: str, limit: int, order: str = "next_poll_at", *,
                              by_due: bool = False) -> str:
        """The statement that picks claimable rows (``by_due``: due ones, by the due-time range, not named
        keys); MySQL adds FOR UPDATE SKIP LOCKED."""
        return f"SELECT {JOB_COLUMNS} FROM jw_jobs WHERE {where} ORDER BY {order} LIMIT {int(limit)}"

    # -- helpers ---------------------------------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._q(sql), tuple(params))
        return cur

    def _exec_many(self, cur: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """One statement over many rows; returns the rows it changed, summed (both drivers sum them)."""
        if not rows:
            return 0
        cur.executemany(self._q(sql), rows)
        return max(cur.rowcount, 0)

    def _update_rows(self, cur: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Run one of the keyed UPDATE statements of this module over many rows; returns the rows changed.

        Here one statement per row, by primary key (SQLite's executemany runs them in C). The MySQL store runs the
        claim and the steady write as one statement per 500 rows joined by primary key (see mysql.py): one UPDATE
        naming 500 job IDs of a bucket with CASE, tried first, deadlocked concurrent pollers' claims in bench/run's
        scale-out, its plan locking rows of the bucket beyond its own."""
        return self._exec_many(cur, sql, rows)

    @staticmethod
    def _row_to_job(row: Sequence[Any], light: bool = False) -> TrackedJob:
        (region, bucket, job_id, state, active, job_json, tags_json, first_seen, last_seen, last_change,
         next_poll_at, poll_interval, error_count, last_error, lease_owner, lease_expires, version, pending_state,
         pending_count, stalled, stall_notified_at, transitions, polls, job_fp) = row
        if not job_json:
            job = None
        elif light:
            job = _stub_job(job_json, job_id, state)
        else:
            job = Job.from_json(json.loads(job_json))
        return TrackedJob.restore(
            key=JobKey.trusted(region, bucket, job_id),
            state=state,
            active=bool(active),
            job=job,
            tags=json.loads(tags_json) if tags_json and tags_json != "{}" else {},
            first_seen=dt(first_seen),  # type: ignore[arg-type]
            last_seen=dt(last_seen),
            last_change=dt(last_change),
            next_poll_at=dt(next_poll_at),  # type: ignore[arg-type]
            poll_interval=float(poll_interval or 0),
            error_count=int(error_count),
            last_error=last_error,
            lease_owner=lease_owner,
            lease_expires=dt(lease_expires),
            version=int(version),
            pending_state=pending_state,
            pending_count=int(pending_count),
            stalled=bool(stalled),
            stall_notified_at=dt(stall_notified_at),
            transitions=int(transitions),
            polls=int(polls),
            job_json=job_json or None,
            light=light and job is not None,
            job_fp=job_fp,
        )

    @staticmethod
    def _row_to_entry(row: Sequence[Any]) -> OutboxEntry:
        (nid, idem_key, kind, region, bucket, job_id, from_state, to_state, observed_at, job_json, tags_json,
         created_at, status, attempts, next_attempt_at, last_error, detail_json) = row
        notice = Notice(
            idempotency_key=idem_key,
            kind=NoticeKind(kind),
            key=JobKey(region, bucket, job_id),
            from_state=from_state,
            to_state=to_state,
            observed_at=dt(observed_at),  # type: ignore[arg-type]
            job=json.loads(job_json) if job_json else None,
            tags=json.loads(tags_json) if tags_json else {},
            id=int(nid),
            detail=json.loads(detail_json) if detail_json else None,
        )
        return OutboxEntry(notice=notice, status=status, attempts=int(attempts), next_attempt_at=dt(next_attempt_at),
                           last_error=last_error, created_at=dt(created_at))  # type: ignore[arg-type]

    # -- schema ----------------------------------------------------------------------------------------------
    def migrate(self) -> int:
        with self._tx() as cur:
            for stmt in self.schema:
                self._exec(cur, stmt)
            self._exec(cur, "SELECT v FROM jw_meta WHERE k = 'schema_version'")
            row = cur.fetchone()
            if row is None:
                self._exec(cur, self._insert_ignore("jw_meta", "k, v", 2), ("schema_version", str(SCHEMA_VERSION)))
                return SCHEMA_VERSION
            found = int(row[0])
            if found > SCHEMA_VERSION:
                raise StoreError(f"store schema version {row[0]} is newer than this code's {SCHEMA_VERSION}")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            self._upgrade(version)
        return SCHEMA_VERSION

    def _upgrade(self, version: int) -> None:
        """Bring the schema to ``version``. Each statement in its own transaction (MySQL commits DDL anyway); a
        column another instance added first is no error, so concurrent upgrades are safe."""
        for stmt in MIGRATIONS.get(version, ()) + self.migrations.get(version, ()):
            try:
                with self._tx() as cur:
                    self._exec(cur, stmt)
            except StoreError as exc:
                if not any(done in str(exc).lower() for done in _ALREADY_DONE):
                    raise
        with self._tx() as cur:
            self._exec(cur, "UPDATE jw_meta SET v=? WHERE k='schema_version' AND v=?", (str(version), str(version - 1)))

    # -- tracked jobs ----------------------------------------------------------------------------------------
    def track(self, keys: Iterable[JobKey], now: datetime, tags: dict[str, str] | None = None, *,
              reactivate: bool = True) -> list[bool]:
        out: list[bool] = []
        t = ts(now)
        tags_json = json.dumps(tags or {}, sort_keys=True)
        with self._tx() as cur:
            for k in keys:
                self._exec(cur, "SELECT active, state FROM jw_jobs WHERE region=? AND bucket=? AND job_id=?",
                           (k.region, k.bucket, k.job_id))
                row = cur.fetchone()
                if row is None:
                    self._exec(
                        cur,
                        self._insert_ignore(
                            "jw_jobs",
                            "region, bucket, job_id, active, tags_json, first_seen, next_poll_at, poll_interval, "
                            "error_count, version, pending_count, stalled, transitions, polls",
                            14,
                        ),
                        (k.region, k.bucket, k.job_id, 1, tags_json, t, t, 0.0, 0, 0, 0, 0, 0, 0),
                    )
                    out.append(cur.rowcount == 1)
                else:
                    active, state = row
                    if not active and not reactivate:
                        pass  # untracked by an operator: discovery leaves it so
                    elif not active and state is None:
                        # untracked before its first observation: watch again
                        self._exec(cur, "UPDATE jw_jobs SET active=1, next_poll_at=? WHERE region=? AND bucket=? "
                                   "AND job_id=?", (t, k.region, k.bucket, k.job_id))
                    elif not active and state is not None and not is_final(state):
                        self._exec(cur, "UPDATE jw_jobs SET active=1, next_poll_at=? WHERE region=? AND bucket=? "
                                   "AND job_id=?", (t, k.region, k.bucket, k.job_id))
                    if tags:
                        self._exec(cur, "UPDATE jw_jobs SET tags_json=? WHERE region=? AND bucket=? AND job_id=?",
                                   (tags_json, k.region, k.bucket, k.job_id))
                    out.append(False)
        return out

    def untrack(self, keys: Iterable[JobKey]) -> int:
        n = 0
        with self._tx() as cur:
            for k in keys:
                self._exec(cur, "UPDATE jw_jobs SET active=0, lease_owner=NULL, lease_expires=NULL, "
                           "version=version+1 WHERE region=? AND bucket=? AND job_id=? AND active=1",
                           (k.region, k.bucket, k.job_id))
                n += cur.rowcount
        return n

    def get(self, key: JobKey) -> TrackedJob | None:
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT {JOB_COLUMNS} FROM jw_jobs WHERE region=? AND bucket=? AND job_id=?",
                       (key.region, key.bucket, key.job_id))
            row = cur.fetchone()
        return self._row_to_job(row) if row else None

    def list_jobs(self, *, active: bool | None = None, limit: int = 1000,
                  after: JobKey | None = None) -> list[TrackedJob]:
        conds: list[str] = [] if active is None else [f"active={1 if active else 0}"]
        params: list[Any] = []
        if after is not None:
            # Spelled out rather than a row-value comparison, which older SQLite and MySQL plan poorly.
            conds.append("(region>? OR (region=? AND (bucket>? OR (bucket=? AND job_id>?))))")
            params += [after.region, after.region, after.bucket, after.bucket, after.job_id]
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT {JOB_COLUMNS} FROM jw_jobs {where} ORDER BY region, bucket, job_id "
                       f"LIMIT {int(limit)}", params)
            rows = cur.fetchall()
        return [self._row_to_job(r) for r in rows]

    def count_jobs(self, *, active: bool | None = None) -> int:
        where = "" if active is None else f"WHERE active={1 if active else 0}"
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT COUNT(*) FROM jw_jobs {where}")
            return int(cur.fetchone()[0])

    def lease_holders(self, now: datetime) -> list[tuple[str, int, datetime]]:
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT lease_owner, COUNT(*), MAX(lease_expires) FROM jw_jobs WHERE active=1 AND "
                       "lease_owner IS NOT NULL AND lease_expires>? GROUP BY lease_owner ORDER BY COUNT(*) DESC, "
                       "lease_owner", (ts(now),))
            return [(owner, int(n), dt(until)) for owner, n, until in cur.fetchall()]  # type: ignore[misc]

    def find_keys(self, job_id: str) -> list[JobKey]:
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT region, bucket, job_id FROM jw_jobs WHERE job_id=? ORDER BY region, bucket",
                       (job_id,))
            return [JobKey(r, b, j) for r, b, j in cur.fetchall()]

    def claim_due(self, owner: str, now: datetime, lease_seconds: float, limit: int,
                  keys: Sequence[JobKey] | None = None, *, due_only: bool = False,
                  light: bool = False, by_creation: bool = False) -> list[TrackedJob]:
        if limit <= 0 or (keys is not None and not keys):
            return []
        if lease_seconds <= 0:
            raise StoreError(f"lease_seconds must be positive, got {lease_seconds!r}")
        t = ts(now)
        expires = t + lease_seconds  # type: ignore[operator]
        params: list[Any]
        if keys is None:
            where = "active=1 AND next_poll_at<=? AND (lease_owner IS NULL OR lease_expires<=?)"
            params = [t, t]
        else:
            conds = " OR ".join("(region=? AND bucket=? AND job_id=?)" for _ in keys)
            where = f"active=1 AND (lease_owner IS NULL OR lease_expires<=?) AND ({conds})"
            params = [t]
            if due_only:
                where = "next_poll_at<=? AND " + where
                params.insert(0, t)
            for k in keys:
                params.extend((k.region, k.bucket, k.job_id))
        claimed: list[TrackedJob] = []
        with self._tx() as cur:
            # A light (bulk refresh) claim takes a bucket's due jobs in the order they were tracked, which follows
            # their creation (discovery tracks them oldest first, a callback when they start): listing windows
            # over creation time then hold mostly claimed jobs. By due time, a backlog larger than one claim
            # would be scattered over the whole span (measured on MariaDB: listing stopped paying).
            # Ties in due time (a batch written at once, or a whole store made due) go to the jobs tracked first,
            # along the claim index (active, next_poll_at, first_seen), not to the smallest job IDs.
            order = "region, bucket, first_seen, job_id" if by_creation else "next_poll_at, first_seen"
            self._exec(cur, self._select_due_for_claim(where, limit, order, by_due=keys is None), params)
            found = [self._row_to_job(row, light) for row in cur.fetchall()]
            # The rows are ours until commit (SQLite: BEGIN IMMEDIATE; MySQL: FOR UPDATE), so nothing can change
            # them between the select and the update: one statement per bucket and 500 IDs, naming only keys
            # (a row's version need not be compared). A short count, which the locks rule out, falls back to
            # asking row by row with the version guard.
            self._exec(cur, "SAVEPOINT jw_claim")
            if self._claim_keys(cur, owner, expires, found) != len(found):
                self._exec(cur, "ROLLBACK TO SAVEPOINT jw_claim")
                ok = []
                for tj in found:
                    self._exec(cur, _CLAIM, (owner, expires, tj.key.region, tj.key.bucket, tj.key.job_id, tj.version))
                    ok.append(cur.rowcount == 1)
            else:
                ok = [True] * len(found)
            lease_expires = dt(expires)
            claimed = []
            for tj, won in zip(found, ok):
                if won:  # the record is ours alone until returned: set the lease on it in place of a copy
                    tj.__dict__.update(lease_owner=owner, lease_expires=lease_expires, version=tj.version + 1)
                    claimed.append(tj)
        return claimed

    def _claim_keys(self, cur: Any, owner: str, expires: float, found: Sequence[TrackedJob]) -> int:
        """Lease ``found`` (rows this transaction has locked) by key: one statement per bucket and chunk of
        sorted IDs; returns the rows changed."""
        changed = 0
        by_bucket: dict[tuple[str, str], list[str]] = {}
        for tj in found:
            by_bucket.setdefault((tj.key.region, tj.key.bucket), []).append(tj.key.job_id)
        for (region, bucket), ids in by_bucket.items():
            ids.sort()
            for i in range(0, len(ids), _KEY_CHUNK):
                self._exec(cur, *self._claim_chunk(owner, expires, region, bucket, ids[i:i + _KEY_CHUNK]))
                changed += cur.rowcount
        return changed

    def _claim_chunk(self, owner: str, expires: float, region: str, bucket: str,
                     ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """The statement leasing one chunk of one bucket's job IDs, and its parameters."""
        return _CLAIM_KEYS.format(",".join("?" * len(ids))), (owner, expires, region, bucket, *ids)

    def release(self, claimed: Iterable[TrackedJob], owner: str) -> None:
        with self._tx() as cur:
            for tj in claimed:
                self._exec(cur, "UPDATE jw_jobs SET lease_owner=NULL, lease_expires=NULL WHERE region=? AND "
                           "bucket=? AND job_id=? AND lease_owner=? AND version=?",
                           (tj.key.region, tj.key.bucket, tj.key.job_id, owner, tj.version))

    def record_polls(self, owner: str, records: Sequence[PollRecord]) -> list[bool]:
        """All records in one transaction and, when every lease still holds (nearly always), one statement per
        table. A lost lease rolls the batch back to a savepoint and writes it row by row, so exactly the records
        whose lease holds are written."""
        if not records:
            return []
        rows = [self._job_row(owner, r) for r in records]
        with self._tx() as cur:
            self._exec(cur, "SAVEPOINT jw_record")
            # One statement per kind of row: steady (only the poll bookkeeping), the job's JSON kept, everything.
            changed = sum(self._update_rows(cur, sql, [row for kind, row in rows if kind == sql])
                          for sql in (_UPDATE_STEADY, _UPDATE_KEEP_JOB, _UPDATE_JOB))
            if changed == len(records):
                self._exec_many(cur, _INSERT_HISTORY,
                                [_history_row(r.after.key, tr) for r in records for tr in r.transitions])
                self._insert_notices(cur, [(nt, r.after.last_seen or r.after.first_seen)
                                           for r in records for nt in r.notices])
                self._exec_many(cur, _INSERT_POLL_ERROR, [_poll_error_row(e) for r in records for e in r.errors])
                return [True] * len(records)
            self._exec(cur, "ROLLBACK TO SAVEPOINT jw_record")
            return [self._record_one(cur, rec, row) for rec, row in zip(records, rows)]

    @staticmethod
    def _job_row(owner: str, rec: PollRecord) -> tuple[str, tuple[Any, ...]]:
        """The statement that writes this record and its parameters. A poll that changed nothing but the poll
        bookkeeping (the usual steady poll) writes only that; a job whose detail did not change (the same object,
        or the same JSON text as stored) keeps its stored JSON instead of rewriting it."""
        a, b, k = rec.after, rec.before, rec.after.key
        where = (k.region, k.bucket, k.job_id, owner, b.version)
        fp = b.job_fp
        if a.job is b.job:
            job_text = None
            same_job = True
        elif a.job is not None and a.job.fingerprint is not None and a.job.fingerprint == fp:
            job_text = None  # the same answer as the one stored: nothing to serialise
            same_job = True
        else:
            job_text = json.dumps(a.job.to_json()) if a.job else None
            same_job = job_text is not None and job_text == b.job_json
            fp = a.job.fingerprint if a.job else None  # it describes the stored JSON either way
        if same_job and fp == b.job_fp and not rec.transitions and not rec.notices and _same_but_poll(a, b):
            return _UPDATE_STEADY, (ts(a.last_seen), ts(a.next_poll_at), a.poll_interval) + where
        head = (a.state, 1 if a.active else 0)
        tail = (fp, ts(a.last_seen), ts(a.last_change), ts(a.next_poll_at), a.poll_interval, a.error_count,
                a.last_error, a.pending_state, a.pending_count, 1 if a.stalled else 0, ts(a.stall_notified_at),
                a.transitions) + where
        if same_job:
            return _UPDATE_KEEP_JOB, head + tail
        return _UPDATE_JOB, head + (job_text,) + tail

    def _record_one(self, cur: Any, rec: PollRecord, row: tuple[str, tuple[Any, ...]]) -> bool:
        self._exec(cur, *row)
        if cur.rowcount != 1:
            return False
        for tr in rec.transitions:
            self._exec(cur, _INSERT_HISTORY, _history_row(rec.after.key, tr))
        self._insert_notices(cur, [(nt, rec.after.last_seen or rec.after.first_seen) for nt in rec.notices])
        self._exec_many(cur, _INSERT_POLL_ERROR, [_poll_error_row(e) for e in rec.errors])
        return True

    def _insert_notices(self, cur: Any, notices: Sequence[tuple[Notice, datetime]]) -> int:
        """Insert (notice, created-at) pairs; one already there (same idempotency key) is left as it is."""
        sql = self._insert_ignore(
            "jw_outbox",
            "idem_key, kind, region, bucket, job_id, from_state, to_state, observed_at, job_json, tags_json, "
            "created_at, status, attempts, next_attempt_at, detail_json",
            15,
        )
        return self._exec_many(cur, sql, [(
            nt.idempotency_key, nt.kind.value, nt.key.region, nt.key.bucket, nt.key.job_id, nt.from_state,
            nt.to_state, ts(nt.observed_at), json.dumps(nt.job) if nt.job is not None else None,
            json.dumps(nt.tags, sort_keys=True), ts(now), "pending", 0, ts(nt.not_before or now),
            json.dumps(nt.detail, sort_keys=True) if nt.detail is not None else None) for nt, now in notices])

    def revoke_session(self, nonce: str, until: float, now: float) -> None:
        with self._tx() as cur:
            self._exec(cur, "DELETE FROM jw_revoked_sessions WHERE until_at<=?", (now,))
            self._exec(cur, self._insert_ignore("jw_revoked_sessions", "nonce, until_at", 2), (nonce, until))

    def session_revoked(self, nonce: str, now: float) -> bool:
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT 1 FROM jw_revoked_sessions WHERE nonce=? AND until_at>?", (nonce, now))
            return cur.fetchone() is not None

    def list_due(self, now: datetime, limit: int) -> list[JobKey]:
        """Keys of due, unleased jobs, earliest first, without claiming them (fan-out hands them to shards)."""
        t = ts(now)
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT region, bucket, job_id FROM jw_jobs WHERE active=1 AND next_poll_at<=? AND "
                       f"(lease_owner IS NULL OR lease_expires<=?) ORDER BY next_poll_at LIMIT {int(limit)}", (t, t))
            return [JobKey(r, b, j) for r, b, j in cur.fetchall()]

    def count_due(self, now: datetime) -> int:
        t = ts(now)
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT COUNT(*) FROM jw_jobs WHERE active=1 AND next_poll_at<=? AND "
                       "(lease_owner IS NULL OR lease_expires<=?)", (t, t))
            return int(cur.fetchone()[0])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT COALESCE(state, 'New'), active, COUNT(*) FROM jw_jobs GROUP BY state, active")
            for state, active, n in cur.fetchall():
                label = state if (active or state is None or is_final(state)) else f"{state} (untracked)"
                out[f"jobs.{label}"] = out.get(f"jobs.{label}", 0) + int(n)
            self._exec(cur, "SELECT status, COUNT(*) FROM jw_outbox GROUP BY status")
            for status, n in cur.fetchall():
                out[f"outbox.{status}"] = int(n)
        return out

    def history(self, key: JobKey) -> list[Transition]:
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT seq, from_state, to_state, observed_at, service_time, code, message FROM "
                       "jw_history WHERE region=? AND bucket=? AND job_id=? ORDER BY seq",
                       (key.region, key.bucket, key.job_id))
            rows = cur.fetchall()
        return [Transition(key, int(s), f, t, dt(o), dt(st), c, m) for s, f, t, o, st, c, m in rows]  # type: ignore

    # -- status displays -------------------------------------------------------------------------------------
    def query_jobs(self, query: JobQuery) -> JobPage:
        where, params = _job_filter(query)
        order = ("CASE WHEN stalled=1 THEN 0 WHEN error_count>0 THEN 1 WHEN state='Failed' THEN 2 "
                 "WHEN active=1 THEN 3 ELSE 4 END, COALESCE(last_change, first_seen) DESC, region, bucket, job_id")
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT COUNT(*) FROM jw_jobs {where}", params)
            total = int(cur.fetchone()[0])
            self._exec(cur, f"SELECT {JOB_COLUMNS} FROM jw_jobs {where} ORDER BY {order} "
                       f"LIMIT {max(int(query.limit), 0)} OFFSET {max(int(query.offset), 0)}", params)
            rows = cur.fetchall()
        return JobPage([self._row_to_job(r) for r in rows], total)

    def job_facets(self, limit: int = 500) -> dict[str, list[str]]:
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT DISTINCT bucket FROM jw_jobs ORDER BY bucket LIMIT {int(limit)}")
            buckets = [str(r[0]) for r in cur.fetchall()]
            self._exec(cur, "SELECT DISTINCT tags_json FROM jw_jobs WHERE tags_json IS NOT NULL AND "
                       f"tags_json<>'{{}}' LIMIT {int(limit) * 4}")
            tags: set[str] = set()
            for (raw,) in cur.fetchall():
                try:
                    tags.update(f"{k}={v}" for k, v in json.loads(raw).items())
                except (ValueError, AttributeError):
                    continue
        return {"buckets": buckets, "tags": sorted(tags)[:limit]}

    def poll_errors(self, key: JobKey, limit: int = 200) -> list[PollError]:
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT at, message FROM jw_poll_errors WHERE region=? AND bucket=? AND job_id=? "
                       f"ORDER BY at DESC, id DESC LIMIT {int(limit)}", (key.region, key.bucket, key.job_id))
            rows = cur.fetchall()
        return [PollError(key, dt(at), msg or "") for at, msg in reversed(rows)]  # type: ignore[arg-type]

    def job_notices(self, key: JobKey, limit: int = 200) -> list[OutboxEntry]:
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT {OUTBOX_COLUMNS} FROM jw_outbox WHERE region=? AND bucket=? AND job_id=? "
                       f"ORDER BY id LIMIT {int(limit)}", (key.region, key.bucket, key.job_id))
            entries = [self._row_to_entry(r) for r in cur.fetchall()]
            return self._with_deliveries(cur, entries)

    # -- outbox ----------------------------------------------------------------------------------------------
    def add_notices(self, notices: Sequence[Notice], now: datetime) -> int:
        with self._tx() as cur:
            return self._insert_notices(cur, [(nt, now) for nt in notices])

    def claim_notices(self, owner: str, now: datetime, lease_seconds: float, limit: int) -> list[OutboxEntry]:
        t = ts(now)
        with self._tx() as cur:
            self._exec(cur, self._select_outbox_for_claim(limit), (t, t))
            entries = [self._row_to_entry(r) for r in cur.fetchall()]
            claimed = []
            for e in entries:
                self._exec(cur, "UPDATE jw_outbox SET lease_owner=?, lease_expires=? WHERE id=? AND "
                           "status='pending' AND (lease_owner IS NULL OR lease_expires<=?)",
                           (owner, t + lease_seconds, e.notice.id, t))  # type: ignore[operator]
                if cur.rowcount == 1:
                    claimed.append(e)
            return self._with_deliveries(cur, claimed)

    def _select_outbox_for_claim(self, limit: int) -> str:
        return (f"SELECT {OUTBOX_COLUMNS} FROM jw_outbox WHERE status='pending' AND next_attempt_at<=? AND "
                f"(lease_owner IS NULL OR lease_expires<=?) ORDER BY id LIMIT {int(limit)}")

    def _with_deliveries(self, cur: Any, entries: list[OutboxEntry]) -> list[OutboxEntry]:
        if not entries:
            return entries
        by_id: dict[int, dict[str, Delivery]] = {e.notice.id: {} for e in entries}  # type: ignore[misc]
        ids = list(by_id)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self._exec(cur, "SELECT notice_id, sink, status, attempts, last_error, updated_at FROM jw_deliveries "
                       f"WHERE notice_id IN ({','.join('?' * len(chunk))})", chunk)
            for nid, sink, status, attempts, err, upd in cur.fetchall():
                by_id[int(nid)][sink] = Delivery(sink, status, int(attempts), err, dt(upd))  # type: ignore[arg-type]
        return [OutboxEntry(e.notice, e.status, e.attempts, e.next_attempt_at, e.last_error, e.created_at,
                            by_id[e.notice.id]) for e in entries]  # type: ignore[index]

    def record_delivery(self, notice_id: int, sink: str, ok: bool, error: str | None, now: datetime,
                        dead: bool = False) -> None:
        status = "delivered" if ok else ("dead" if dead else "failed")
        with self._tx() as cur:
            # A late failure (a drain that outlived its lease) never downgrades a delivery another one made.
            self._exec(cur, "UPDATE jw_deliveries SET status=?, attempts=attempts+1, last_error=?, updated_at=? "
                       "WHERE notice_id=? AND sink=?" + ("" if ok else " AND status<>'delivered'"),
                       (status, error, ts(now), notice_id, sink))
            if cur.rowcount == 0:
                self._exec(cur, self._insert_ignore("jw_deliveries",
                                                    "notice_id, sink, status, attempts, last_error, updated_at", 6),
                           (notice_id, sink, status, 1, error, ts(now)))

    def finish_notice(self, notice_id: int, owner: str, status: str, attempts: int,
                      next_attempt_at: datetime | None, last_error: str | None, now: datetime) -> bool:
        if status not in ("pending", "done", "dead"):
            raise StoreError(f"invalid outbox status {status!r}")
        with self._tx() as cur:
            self._exec(cur, "UPDATE jw_outbox SET status=?, attempts=?, next_attempt_at=?, last_error=?, "
                       "lease_owner=NULL, lease_expires=NULL, delivered_at=? WHERE id=? AND lease_owner=? "
                       "AND status='pending'",
                       (status, attempts, ts(next_attempt_at), last_error, ts(now) if status == "done" else None,
                        notice_id, owner))
            return cur.rowcount == 1

    def list_outbox(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        where, params = ("WHERE status=?", (status,)) if status else ("", ())
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT {OUTBOX_COLUMNS} FROM jw_outbox {where} ORDER BY id LIMIT {int(limit)}", params)
            entries = [self._row_to_entry(r) for r in cur.fetchall()]
            return self._with_deliveries(cur, entries)

    def retry_notice(self, notice_id: int, now: datetime) -> bool:
        with self._tx() as cur:
            self._exec(cur, "UPDATE jw_outbox SET status='pending', attempts=0, next_attempt_at=?, lease_owner=NULL, "
                       "lease_expires=NULL WHERE id=? AND status IN ('dead', 'pending')", (ts(now), notice_id))
            ok = cur.rowcount == 1
            if ok:
                self._exec(cur, "UPDATE jw_deliveries SET status='failed', attempts=0 WHERE notice_id=? AND "
                           "status='dead'", (notice_id,))
            return ok

    # -- discovery and retention -----------------------------------------------------------------------------
    def get_watermark(self, region: str, bucket: str) -> datetime | None:
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT created_after FROM jw_watermarks WHERE region=? AND bucket=?", (region, bucket))
            row = cur.fetchone()
        return dt(row[0]) if row else None

    def set_watermark(self, region: str, bucket: str, created_after: datetime, now: datetime) -> None:
        with self._tx() as cur:
            self._exec(cur, "UPDATE jw_watermarks SET created_after=?, updated_at=? WHERE region=? AND bucket=?",
                       (ts(created_after), ts(now), region, bucket))
            if cur.rowcount == 0:
                self._exec(cur, self._insert_ignore("jw_watermarks", "region, bucket, created_after, updated_at", 4),
                           (region, bucket, ts(created_after), ts(now)))

    def purge(self, before: datetime, *, batch: int = 1000,
              progress: Callable[[dict[str, int]], None] | None = None, dry_run: bool = False) -> dict[str, int]:
        """In batches of ``batch`` jobs, each its own short transaction, so a large purge neither holds locks
        for long nor loses its work if interrupted; ``progress`` gets the running counts after each batch."""
        if dry_run:
            return self._purgeable(before)
        t = ts(before)
        counts = {"jobs": 0, "history": 0, "outbox": 0, "poll_errors": 0}
        while True:
            with self._tx() as cur:
                self._exec(cur, "SELECT region, bucket, job_id FROM jw_jobs WHERE active=0 AND "
                           f"COALESCE(last_change, first_seen)<? LIMIT {int(batch)}", (t,))
                keys = cur.fetchall()
                for region, bucket, job_id in keys:
                    self._exec(cur, "DELETE FROM jw_history WHERE region=? AND bucket=? AND job_id=?",
                               (region, bucket, job_id))
                    counts["history"] += max(cur.rowcount, 0)
                    self._exec(cur, "DELETE FROM jw_jobs WHERE region=? AND bucket=? AND job_id=? AND active=0",
                               (region, bucket, job_id))
                    counts["jobs"] += max(cur.rowcount, 0)
                    self._purge_children(cur, region, bucket, job_id)
            if progress and keys:
                progress(dict(counts))
            if len(keys) < batch:
                break
        with self._tx() as cur:  # small rows, at most one per failed poll: one statement
            self._exec(cur, "DELETE FROM jw_poll_errors WHERE at<?", (t,))
            counts["poll_errors"] = max(cur.rowcount, 0)
        while True:
            with self._tx() as cur:
                self._exec(cur, "SELECT id FROM jw_outbox WHERE status IN ('done', 'dead') AND created_at<? "
                           f"LIMIT {int(batch)}", (t,))
                ids = [int(r[0]) for r in cur.fetchall()]
                if ids:
                    marks = ",".join("?" * len(ids))
                    self._exec(cur, f"DELETE FROM jw_deliveries WHERE notice_id IN ({marks})", ids)
                    self._exec(cur, f"DELETE FROM jw_outbox WHERE id IN ({marks})", ids)
                    counts["outbox"] += max(cur.rowcount, 0)
            if progress and ids:
                progress(dict(counts))
            if len(ids) < batch:
                break
        return counts

    def _purgeable(self, before: datetime) -> dict[str, int]:
        """What :meth:`purge` would delete, counted by the same conditions."""
        t = ts(before)
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT COUNT(*) FROM jw_jobs WHERE active=0 AND COALESCE(last_change, first_seen)<?",
                       (t,))
            jobs = int(cur.fetchone()[0])
            self._exec(cur, "SELECT COUNT(*) FROM jw_history h JOIN jw_jobs j ON h.region=j.region AND "
                       "h.bucket=j.bucket AND h.job_id=j.job_id WHERE j.active=0 AND "
                       "COALESCE(j.last_change, j.first_seen)<?", (t,))
            history = int(cur.fetchone()[0])
            self._exec(cur, "SELECT COUNT(*) FROM jw_outbox WHERE status IN ('done', 'dead') AND created_at<?", (t,))
            outbox = int(cur.fetchone()[0])
            self._exec(cur, "SELECT COUNT(*) FROM jw_poll_errors WHERE at<?", (t,))
            poll_errors = int(cur.fetchone()[0])
        return {"jobs": jobs, "history": history, "outbox": outbox, "poll_errors": poll_errors}


_CLAIM = ("UPDATE jw_jobs SET lease_owner=?, lease_expires=?, version=version+1 "
          "WHERE region=? AND bucket=? AND job_id=? AND version=?")
_CLAIM_KEYS = ("UPDATE jw_jobs SET lease_owner=?, lease_expires=?, version=version+1 "
               "WHERE region=? AND bucket=? AND job_id IN ({})")
_KEY_CHUNK = 500  # IDs per statement (SQLite before 3.32 allows 999 parameters)
_SET_REST = (
    "job_fp=?, last_seen=?, last_change=?, next_poll_at=?, poll_interval=?, error_count=?, last_error=?, "
    "lease_owner=NULL, lease_expires=NULL, version=version+1, pending_state=?, pending_count=?, stalled=?, "
    "stall_notified_at=?, transitions=?, polls=polls+1 WHERE region=? AND bucket=? AND job_id=? AND lease_owner=? "
    "AND version=?"
)
_UPDATE_JOB = "UPDATE jw_jobs SET state=?, active=?, job_json=?, " + _SET_REST
_UPDATE_KEEP_JOB = "UPDATE jw_jobs SET state=?, active=?, " + _SET_REST
_UPDATE_STEADY = (
    "UPDATE jw_jobs SET last_seen=?, next_poll_at=?, poll_interval=?, lease_owner=NULL, lease_expires=NULL, "
    "version=version+1, polls=polls+1 WHERE region=? AND bucket=? AND job_id=? AND lease_owner=? AND version=?"
)


def _same_but_poll(a: TrackedJob, b: TrackedJob) -> bool:
    """Whether ``a`` differs from ``b`` in the poll bookkeeping only (what the steady statement writes)."""
    return (a.state == b.state and a.active == b.active and a.last_change == b.last_change
            and a.error_count == b.error_count and a.last_error == b.last_error
            and a.pending_state == b.pending_state and a.pending_count == b.pending_count
            and a.stalled == b.stalled and a.stall_notified_at == b.stall_notified_at
            and a.transitions == b.transitions)


# The stored JSON is always json.dumps(Job.to_json()): "job_id", "name", "type", "state", ... in that order, so
# the first structural '"type": ' and '"created_at": ' are the top-level ones (a quote inside a value is escaped).
_TYPE_RE = re.compile(r'"type": (?:"([^"\\]*)"|null)')
_CREATED_RE = re.compile(r'"created_at": (?:"([^"\\]*)"|null)')


def _stub_job(job_json: str, job_id: str, state: str | None) -> Job:
    """The few fields a light claim needs (ID, type, state, creation time), read without decoding the JSON."""
    t, c = _TYPE_RE.search(job_json), _CREATED_RE.search(job_json)
    if t is None or c is None:  # not our own serialisation: decode it
        d = json.loads(job_json)
        typ, created = d.get("type"), d.get("created_at")
    else:
        typ, created = t.group(1), c.group(1)
    return Job.stub(job_id, typ, state or "", from_iso(created))


_INSERT_HISTORY = (
    "INSERT INTO jw_history (region, bucket, job_id, seq, from_state, to_state, observed_at, service_time, code, "
    "message) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


_INSERT_POLL_ERROR = "INSERT INTO jw_poll_errors (region, bucket, job_id, at, message) VALUES (?,?,?,?,?)"


def _poll_error_row(e: PollError) -> tuple[Any, ...]:
    return (e.key.region, e.key.bucket, e.key.job_id, ts(e.at), e.message)


def _history_row(k: JobKey, tr: Transition) -> tuple[Any, ...]:
    return (k.region, k.bucket, k.job_id, tr.seq, tr.from_state, tr.to_state, ts(tr.observed_at),
            ts(tr.service_time), tr.code, tr.message)


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _job_filter(query: JobQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of a :class:`JobQuery`. Tags are matched in their stored JSON (keys sorted, default
    separators, as :meth:`SqlStore.track` writes them), so no JSON functions are needed in either dialect."""
    conds: list[str] = []
    params: list[Any] = []
    if query.state == "New":
        conds.append("state IS NULL")
    elif query.state:
        conds.append("state=?")
        params.append(query.state)
    if query.bucket:
        conds.append("bucket=?")
        params.append(query.bucket)
    if query.tag:
        name, sep, value = query.tag.partition("=")
        needle = json.dumps(name) + ": " + (json.dumps(value) if sep else "")
        conds.append("tags_json LIKE ? ESCAPE '!'")
        params.append("%" + _like_escape(needle) + "%")
    return ("WHERE " + " AND ".join(conds) if conds else ""), params
