"""SQL for a batch job's children (both backends): its progress row (counts, times, cursor, lease) and one row per
child seen, so a child is counted once however often a list returns it, and a final one is never fetched again.

Mixed into :class:`~jobwatch.store.sql.SqlStore`; uses its transaction and placeholder helpers.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence, TypeVar

from jobwatch.core.children import ChildJob, ChildKind, is_final_child_state
from jobwatch.core.errors import LockConflict, StoreError
from jobwatch.core.models import Job, JobKey
from jobwatch.core.progress import ChildrenUpdate, ChildrenWork, Progress
from jobwatch.store.base import ChildSpan

_T = TypeVar("_T")

_PROGRESS_COLUMNS = ("total, succeeded, failed, running, waiting, cancelled, first_child_at, last_child_at, "
                     "last_end_at, refreshed_at, complete, cursor_json, failed_notified, lease_owner")
_CHILD_COLUMNS = ("child_id, kind, object_key, state, created_at, started_at, ended_at, code, message, "
                  "workflow_id, queue_id, tag")
_FINAL_BATCH = "('Success', 'Failed', 'Cancel')"
# A batch that ended without our ever counting its children (registered already finished, or before this
# feature) gets its one final count only if it ended this recently: an upgrade does not list every old batch.
FINAL_REFRESH_WINDOW = timedelta(days=1)


def _ts(d: datetime | None) -> float | None:
    from jobwatch.store.sql import ts

    return ts(d)


def _dt(v: Any) -> datetime | None:
    from jobwatch.store.sql import dt

    return dt(v)


class ChildrenSqlMixin:
    """The children half of :class:`~jobwatch.store.base.Store`, shared by SQLite and MySQL."""

    # provided by SqlStore (which comes first in its own MRO)
    def _tx(self, write: bool = True) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _exec_many(self, cur: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:  # pragma: no cover
        raise NotImplementedError

    def _insert_ignore(self, table: str, columns: str, n: int) -> str:  # pragma: no cover
        raise NotImplementedError

    # -- claiming --------------------------------------------------------------------------------------------
    def claim_children(self, owner: str, now: datetime, lease_seconds: float, limit: int,
                       keys: Sequence[JobKey] | None = None, *, due_only: bool = True) -> list[ChildrenWork]:
        return _again_on_lock_conflict(lambda: self._claim_children(owner, now, lease_seconds, limit, keys,
                                                                    due_only))

    def _claim_children(self, owner: str, now: datetime, lease_seconds: float, limit: int,
                        keys: Sequence[JobKey] | None, due_only: bool = True) -> list[ChildrenWork]:
        if limit <= 0 or (keys is not None and not keys):
            return []
        if lease_seconds <= 0:
            raise StoreError(f"lease_seconds must be positive, got {lease_seconds!r}")
        if not due_only and keys is None:
            raise StoreError("claim_children: due_only=False needs the keys to claim")
        t = _ts(now)
        recent = _ts(now - FINAL_REFRESH_WINDOW)
        # Due: an active batch polled since its children were last read, with a pass to carry on, or asked for
        # by a callback; an ended batch whose final count is not done yet. Vanished and untracked ones: never.
        due = ("((j.active=1 AND j.state IS NOT NULL AND (p.job_id IS NULL OR p.refreshed_at IS NULL "
               "OR j.last_seen>p.refreshed_at OR p.in_pass=1 OR p.requested_at>p.refreshed_at)) "
               f"OR (j.active=0 AND j.state IN {_FINAL_BATCH} AND ((p.job_id IS NULL AND j.last_change>=?) "
               "OR (p.job_id IS NOT NULL AND p.complete=0))))")
        if not due_only:  # the named batches whether due or not (a callback's child is read back now): any tracked
            # one, active or ended, never a vanished or untracked one
            due = (f"((j.active=1 AND j.state IS NOT NULL) OR (j.active=0 AND j.state IN {_FINAL_BATCH} AND "
                   "j.last_change>=?))")
        params: list[Any] = [recent]
        where = f"j.job_json IS NOT NULL AND (p.lease_owner IS NULL OR p.lease_expires<=?) AND {due}"
        params.insert(0, t)
        if keys is not None:
            conds = " OR ".join("(j.region=? AND j.bucket=? AND j.job_id=?)" for _ in keys)
            where += f" AND ({conds})"
            for k in keys:
                params.extend((k.region, k.bucket, k.job_id))
        cols = ", ".join(f"p.{c.strip()}" for c in _PROGRESS_COLUMNS.split(","))
        sql = (f"SELECT j.region, j.bucket, j.job_id, j.state, j.active, j.job_json, j.tags_json, p.job_id, {cols} "
               "FROM jw_jobs j LEFT JOIN jw_child_progress p ON p.region=j.region AND p.bucket=j.bucket AND "
               f"p.job_id=j.job_id WHERE {where} ORDER BY COALESCE(p.refreshed_at, 0) LIMIT {int(limit)}")
        out: list[ChildrenWork] = []
        with self._tx() as cur:
            self._exec(cur, sql, params)
            # Rows are locked in primary-key order, inserts before updates: concurrent claimers that pick
            # overlapping batches then wait for each other instead of deadlocking (MariaDB error 1213 with 8
            # pollers when each took its rows in its own order).
            rows = sorted(cur.fetchall(), key=lambda r: (r[0], r[1], r[2]))
            missing = [r[:3] for r in rows if r[7] is None]
            if missing:
                self._exec_many(cur, self._insert_ignore(
                    "jw_child_progress", "region, bucket, job_id, total, succeeded, failed, running, waiting, "
                    "cancelled, complete, in_pass, failed_notified, version", 13),
                    [(region, bucket, job_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) for region, bucket, job_id in missing])
            for row in rows:
                region, bucket, job_id, state, active, job_json, tags_json, has_row = row[:8]
                self._exec(cur, "UPDATE jw_child_progress SET lease_owner=?, lease_expires=?, version=version+1 "
                           "WHERE region=? AND bucket=? AND job_id=? AND (lease_owner IS NULL OR lease_expires<=?)",
                           (owner, t + lease_seconds, region, bucket, job_id, t))  # type: ignore[operator]
                if cur.rowcount != 1:
                    continue
                key = JobKey(region, bucket, job_id)
                progress, cursor, notified = _progress_from(row[8:]) if has_row is not None else (Progress(), {}, 0)
                out.append(ChildrenWork(key, Job.from_json(json.loads(job_json)), state, bool(active), progress,
                                        cursor, notified, owner, json.loads(tags_json) if tags_json else {}))
        return out

    def release_children(self, keys: Iterable[JobKey], owner: str) -> None:
        keys = sorted(dict.fromkeys(keys), key=lambda k: (k.region, k.bucket, k.job_id))  # rows in key order
        _again_on_lock_conflict(lambda: self._release_children(keys, owner))

    def _release_children(self, keys: Sequence[JobKey], owner: str) -> None:
        with self._tx() as cur:
            for k in keys:
                self._exec(cur, "UPDATE jw_child_progress SET lease_owner=NULL, lease_expires=NULL WHERE region=? "
                           "AND bucket=? AND job_id=? AND lease_owner=?", (k.region, k.bucket, k.job_id, owner))

    # -- writing ---------------------------------------------------------------------------------------------
    def record_children(self, owner: str, key: JobKey, update: ChildrenUpdate, now: datetime) -> bool:
        return _again_on_lock_conflict(lambda: self._record_children(owner, key, update, now))

    def _record_children(self, owner: str, key: JobKey, update: ChildrenUpdate, now: datetime) -> bool:
        p = update.progress
        with self._tx() as cur:
            lease = "NULL" if update.release else "lease_owner"
            lease_exp = "NULL" if update.release else "lease_expires"
            more = 1 if update.cursor.get("more") else 0
            self._exec(cur, f"UPDATE jw_child_progress SET total=?, succeeded=?, failed=?, running=?, waiting=?, "
                       "cancelled=?, first_child_at=?, last_child_at=?, last_end_at=?, refreshed_at=?, complete=?, "
                       f"cursor_json=?, in_pass=?, failed_notified=?, lease_owner={lease}, lease_expires={lease_exp}, "
                       "version=version+1 WHERE region=? AND bucket=? AND job_id=? AND lease_owner=?",
                       (p.total, p.succeeded, p.failed, p.running, p.waiting, p.cancelled, _ts(p.first_child_at),
                        _ts(p.last_child_at), _ts(p.last_end_at), _ts(p.refreshed_at), 1 if p.complete else 0,
                        json.dumps(update.cursor, sort_keys=True), more, update.failed_notified,
                        key.region, key.bucket, key.job_id, owner))
            if cur.rowcount != 1:
                return False
            self._upsert_children(cur, key, update.children, update.touched_pass)
            if update.close is not None:
                kind, wf, pass_id, after, before = update.close
                wf_cond, wf_params = _wf(wf)
                self._exec(cur, "UPDATE jw_children SET final=2 WHERE region=? AND bucket=? AND job_id=? AND final=0 "
                           f"AND kind=? {wf_cond} AND seen_pass<>? AND created_at>? AND created_at<?",
                           (key.region, key.bucket, key.job_id, kind, *wf_params, pass_id, after, before))
            if update.resolve is not None:
                kind, wf = update.resolve
                wf_cond, wf_params = _wf(wf)
                self._exec(cur, "UPDATE jw_children SET final=1, state='Success' WHERE region=? AND bucket=? AND "
                           f"job_id=? AND final=2 AND kind=? {wf_cond}",
                           (key.region, key.bucket, key.job_id, kind, *wf_params))
            if update.notices:
                self._insert_notices(cur, [(nt, now) for nt in update.notices])  # type: ignore[attr-defined]
            if update.final_detail is not None or update.release_final:
                sets: list[str] = []
                params: list[Any] = []
                if update.final_detail is not None:
                    sets.append("detail_json=?")
                    params.append(json.dumps(update.final_detail, sort_keys=True))
                if update.release_final:
                    sets.append("next_attempt_at=?")
                    params.append(_ts(now))
                self._exec(cur, f"UPDATE jw_outbox SET {', '.join(sets)} WHERE region=? AND bucket=? AND job_id=? "
                           f"AND kind='transition' AND to_state IN {_FINAL_BATCH} AND status='pending' AND "
                           "attempts=0", (*params, key.region, key.bucket, key.job_id))
        return True

    def _upsert_children(self, cur: Any, key: JobKey, children: Sequence[ChildJob], touched_pass: int = 0) -> None:
        if not children:
            return
        ids = [c.child_id for c in children]
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self._exec(cur, "SELECT child_id FROM jw_children WHERE region=? AND bucket=? AND job_id=? AND "
                       f"child_id IN ({','.join('?' * len(chunk))})", (key.region, key.bucket, key.job_id, *chunk))
            known.update(r[0] for r in cur.fetchall())
        new = [c for c in children if c.child_id not in known]
        old = [c for c in children if c.child_id in known]
        self._exec_many(cur, "INSERT INTO jw_children (region, bucket, job_id, seen_pass, final, " + _CHILD_COLUMNS +
                        ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [(key.region, key.bucket, key.job_id, touched_pass, *_child_row(c)) for c in new])
        self._exec_many(cur, "UPDATE jw_children SET seen_pass=?, final=?, kind=?, object_key=?, state=?, "
                        "created_at=?, started_at=?, ended_at=?, code=?, message=?, workflow_id=?, queue_id=?, tag=? "
                        "WHERE region=? AND bucket=? AND job_id=? AND child_id=?",
                        [(touched_pass, r[0], *r[2:], key.region, key.bucket, key.job_id, c.child_id)
                         for c, r in ((c, _child_row(c)) for c in old)])

    def request_children_refresh(self, keys: Iterable[JobKey], now: datetime) -> int:
        keys = sorted(dict.fromkeys(keys), key=lambda k: (k.region, k.bucket, k.job_id))  # rows in key order
        return _again_on_lock_conflict(lambda: self._request_children_refresh(keys, now))

    def _request_children_refresh(self, keys: Sequence[JobKey], now: datetime) -> int:
        n = 0
        with self._tx() as cur:
            for k in keys:
                self._exec(cur, self._insert_ignore(
                    "jw_child_progress", "region, bucket, job_id, total, succeeded, failed, running, waiting, "
                    "cancelled, complete, in_pass, failed_notified, version", 13),
                    (k.region, k.bucket, k.job_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
                self._exec(cur, "UPDATE jw_child_progress SET requested_at=? WHERE region=? AND bucket=? AND "
                           "job_id=?", (_ts(now), k.region, k.bucket, k.job_id))
                n += max(cur.rowcount, 0)
        return n

    # -- reading ---------------------------------------------------------------------------------------------
    def get_progress(self, key: JobKey) -> Progress | None:
        return self.progress_of([key]).get(key)

    def progress_of(self, keys: Sequence[JobKey]) -> dict[JobKey, Progress]:
        out: dict[JobKey, Progress] = {}
        keys = list(dict.fromkeys(keys))
        with self._tx(write=False) as cur:
            for i in range(0, len(keys), 200):
                chunk = keys[i:i + 200]
                conds = " OR ".join("(region=? AND bucket=? AND job_id=?)" for _ in chunk)
                params = [v for k in chunk for v in (k.region, k.bucket, k.job_id)]
                self._exec(cur, f"SELECT region, bucket, job_id, {_PROGRESS_COLUMNS} FROM jw_child_progress "
                           f"WHERE {conds}", params)
                for row in cur.fetchall():
                    out[JobKey(*row[:3])] = _progress_from(row[3:])[0]
        return out

    def known_children(self, key: JobKey, child_ids: Sequence[str]) -> dict[str, str]:
        """State recorded for each of ``child_ids`` already seen (the others are new)."""
        out: dict[str, str] = {}
        ids = list(dict.fromkeys(child_ids))
        with self._tx(write=False) as cur:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                self._exec(cur, "SELECT child_id, state FROM jw_children WHERE region=? AND bucket=? AND job_id=? "
                           f"AND child_id IN ({','.join('?' * len(chunk))})",
                           (key.region, key.bucket, key.job_id, *chunk))
                out.update({cid: st for cid, st in cur.fetchall()})
        return out

    def unsettled_children(self, key: JobKey, kind: ChildKind,
                           workflow_id: str | None = None) -> tuple[ChildSpan, ChildSpan]:
        """Children of one list not final yet, and those gone (final, state not read yet): for each, how many and
        their oldest and newest creation times, in one read."""
        wf_cond, params = _wf(workflow_id)
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT final, COUNT(*), MIN(created_at), MAX(created_at) FROM jw_children WHERE "
                       f"region=? AND bucket=? AND job_id=? AND final IN (0, 2) AND kind=? {wf_cond} GROUP BY final",
                       (key.region, key.bucket, key.job_id, kind.value, *params))
            got = {int(final): (int(n), _dt(lo), _dt(hi)) for final, n, lo, hi in cur.fetchall()}
        return got.get(0, (0, None, None)), got.get(2, (0, None, None))

    def gone_children(self, key: JobKey, kind: ChildKind, workflow_id: str | None = None) -> dict[str, int]:
        """The gone children of one list (final, state not read yet), counted by the state last recorded."""
        wf_cond, params = _wf(workflow_id)
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT state, COUNT(*) FROM jw_children WHERE region=? AND bucket=? AND job_id=? AND "
                       f"final=2 AND kind=? {wf_cond} GROUP BY state",
                       (key.region, key.bucket, key.job_id, kind.value, *params))
            return {st: int(n) for st, n in cur.fetchall()}

    def list_children(self, key: JobKey, *, failed_only: bool = False, limit: int = 100,
                      after: str | None = None) -> list[ChildJob]:
        conds, params = ["region=?", "bucket=?", "job_id=?"], [key.region, key.bucket, key.job_id]
        if failed_only:
            conds.append("state='Failed'")
        if after is not None:
            conds.append("child_id>?")
            params.append(after)
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT {_CHILD_COLUMNS} FROM jw_children WHERE {' AND '.join(conds)} "
                       f"ORDER BY child_id LIMIT {int(max(0, limit))}", params)
            return [_child_from(r) for r in cur.fetchall()]

    def failed_children_missing_detail(self, key: JobKey, limit: int) -> list[ChildJob]:
        """Failed workflow executions whose code is not read yet (their detail call failed or was put off)."""
        with self._tx(write=False) as cur:
            self._exec(cur, f"SELECT {_CHILD_COLUMNS} FROM jw_children WHERE region=? AND bucket=? AND job_id=? "
                       "AND state='Failed' AND kind='workflow' AND code IS NULL ORDER BY child_id "
                       f"LIMIT {int(limit)}", (key.region, key.bucket, key.job_id))
            return [_child_from(r) for r in cur.fetchall()]

    def find_child(self, bucket: str, child_id: str) -> list[JobKey]:
        """The batches (in this bucket) a child is recorded under; normally one."""
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT region, bucket, job_id FROM jw_children WHERE bucket=? AND child_id=? "
                       "ORDER BY region, job_id", (bucket, child_id))
            return [JobKey(*r) for r in cur.fetchall()]

    def active_in_bucket(self, bucket: str, limit: int = 200) -> list[tuple[JobKey, Job | None]]:
        """Active batches of a bucket with their last-read detail (which lists their children come from)."""
        with self._tx(write=False) as cur:
            self._exec(cur, "SELECT region, bucket, job_id, job_json FROM jw_jobs WHERE bucket=? AND active=1 "
                       f"ORDER BY region, job_id LIMIT {int(limit)}", (bucket,))
            return [(JobKey(r, b, j), Job.from_json(json.loads(js)) if js else None)
                    for r, b, j, js in cur.fetchall()]

    def _purge_children(self, cur: Any, region: str, bucket: str, job_id: str) -> int:
        self._exec(cur, "DELETE FROM jw_children WHERE region=? AND bucket=? AND job_id=?", (region, bucket, job_id))
        n = max(cur.rowcount, 0)
        self._exec(cur, "DELETE FROM jw_child_progress WHERE region=? AND bucket=? AND job_id=?",
                   (region, bucket, job_id))
        return n


def _wf(workflow_id: str | None) -> tuple[str, list[Any]]:
    return ("AND workflow_id=?", [workflow_id]) if workflow_id else ("", [])


def _child_row(c: ChildJob) -> tuple[Any, ...]:
    return (1 if is_final_child_state(c.state) else 0, c.child_id, c.kind.value, c.object_key, c.state,
            _ts(c.created_at), _ts(c.started_at), _ts(c.ended_at), c.code, (c.message or None) and c.message[:1000],
            c.workflow_id, c.queue_id, c.tag)


def _child_from(r: Sequence[Any]) -> ChildJob:
    cid, kind, obj, state, created, started, ended, code, message, wf, queue, tag = r
    return ChildJob(cid, ChildKind(kind), obj, state, _dt(created), _dt(started), _dt(ended), code, message, wf,
                    queue, tag)


def _progress_from(r: Sequence[Any]) -> tuple[Progress, dict[str, Any], int]:
    (total, succeeded, failed, running, waiting, cancelled, first, last, last_end, refreshed, complete, cursor_json,
     notified, _owner) = r
    p = Progress(int(total or 0), int(succeeded or 0), int(failed or 0), int(running or 0), int(waiting or 0),
                 int(cancelled or 0), _dt(first), _dt(last), _dt(last_end), _dt(refreshed), bool(complete))
    return p, (json.loads(cursor_json) if cursor_json else {}), int(notified or 0)


# Table definitions per dialect (created by migrate(); new in schema version 2).
SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jw_child_progress (
        region TEXT NOT NULL, bucket TEXT NOT NULL, job_id TEXT NOT NULL,
        total INTEGER NOT NULL DEFAULT 0, succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
        running INTEGER NOT NULL DEFAULT 0, waiting INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0,
        first_child_at REAL, last_child_at REAL, last_end_at REAL, refreshed_at REAL, requested_at REAL,
        complete INTEGER NOT NULL DEFAULT 0, in_pass INTEGER NOT NULL DEFAULT 0, cursor_json TEXT,
        failed_notified INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires REAL,
        version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (region, bucket, job_id))""",
    """CREATE TABLE IF NOT EXISTS jw_children (
        region TEXT NOT NULL, bucket TEXT NOT NULL, job_id TEXT NOT NULL, child_id TEXT NOT NULL,
        kind TEXT NOT NULL, object_key TEXT, state TEXT NOT NULL, final INTEGER NOT NULL DEFAULT 0,
        created_at REAL, started_at REAL, ended_at REAL, code TEXT, message TEXT, workflow_id TEXT,
        queue_id TEXT, tag TEXT, seen_pass INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (region, bucket, job_id, child_id))""",
    "CREATE INDEX IF NOT EXISTS jw_children_pending ON jw_children (region, bucket, job_id, final, kind)",
    "CREATE INDEX IF NOT EXISTS jw_children_state ON jw_children (region, bucket, job_id, state)",
    "CREATE INDEX IF NOT EXISTS jw_children_child ON jw_children (bucket, child_id)",
)
MYSQL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jw_child_progress (
        region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, job_id VARCHAR(128) NOT NULL,
        total INT NOT NULL DEFAULT 0, succeeded INT NOT NULL DEFAULT 0, failed INT NOT NULL DEFAULT 0,
        running INT NOT NULL DEFAULT 0, waiting INT NOT NULL DEFAULT 0, cancelled INT NOT NULL DEFAULT 0,
        first_child_at DOUBLE, last_child_at DOUBLE, last_end_at DOUBLE, refreshed_at DOUBLE, requested_at DOUBLE,
        complete TINYINT NOT NULL DEFAULT 0, in_pass TINYINT NOT NULL DEFAULT 0, cursor_json TEXT,
        failed_notified TINYINT NOT NULL DEFAULT 0, lease_owner VARCHAR(128), lease_expires DOUBLE,
        version BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (region, bucket, job_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS jw_children (
        region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, job_id VARCHAR(128) NOT NULL,
        child_id VARCHAR(128) NOT NULL, kind VARCHAR(16) NOT NULL, object_key VARCHAR(1024), state VARCHAR(32) NOT NULL,
        final TINYINT NOT NULL DEFAULT 0, created_at DOUBLE, started_at DOUBLE, ended_at DOUBLE, code VARCHAR(255),
        message TEXT, workflow_id VARCHAR(128), queue_id VARCHAR(128), tag VARCHAR(64),
        seen_pass INT NOT NULL DEFAULT 0, PRIMARY KEY (region, bucket, job_id, child_id), KEY jw_children_pending (region, bucket, job_id, final, kind),
        KEY jw_children_state (region, bucket, job_id, state), KEY jw_children_child (bucket, child_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)


def _again_on_lock_conflict(run: Callable[[], _T], attempts: int = 3) -> _T:
    """Run one whole transaction, again after a short random pause when the database rolled it back for a lock
    conflict (several pollers writing children of neighbouring batches deadlock now and then on MariaDB): the
    rollback undid all of it, so a second run is the same transaction."""
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except LockConflict:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.02, 0.1) * attempt)
    raise AssertionError("unreachable")
