"""What a claim of due jobs holds locked on MariaDB while its transaction is open. Several instances share one
store: while one claims, the others go on writing the jobs they polled and claiming their own. A claim takes
``SELECT ... FOR UPDATE SKIP LOCKED``, so every row it reads stays locked until it commits; it must read the due
jobs only, never the whole table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pymysql
import pytest

from fixtures.stores import MYSQL_HOST, MYSQL_PORT, MYSQL_USER
from jobwatch.core.models import JobKey
from jobwatch.store import open_store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
BUCKET = "examplebucket-1250000000"


def _write_from_another_instance(database: str, key: JobKey) -> str:
    """Move ``key``'s next poll time from a connection of its own, waiting at most a second for a lock."""
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password="", database=database,
                           autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout=1")
            try:
                cur.execute("UPDATE jw_jobs SET next_poll_at=next_poll_at+1 WHERE region=%s AND bucket=%s AND "
                            "job_id=%s", (key.region, key.bucket, key.job_id))
                conn.commit()
                return "written"
            except pymysql.MySQLError as exc:
                conn.rollback()
                return f"blocked ({exc.args[0]})"
    finally:
        conn.close()


@pytest.mark.mysql
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk claim (by creation)", "claim by due time"])
def test_a_claim_leaves_the_jobs_that_are_not_due_writable(mysql_url, bulk):
    store = open_store(mysql_url)
    database = mysql_url.rsplit("/", 1)[1]
    try:
        keys = [JobKey("ap-guangzhou", BUCKET, f"b{i:031x}") for i in range(40)]
        for n, k in enumerate(keys):
            store.track([k], T0 + timedelta(seconds=n))
        later = keys[::2]  # every other job polled a minute ago and due again in an hour
        with store._tx() as cur:
            for k in later:
                store._exec(cur, "UPDATE jw_jobs SET next_poll_at=? WHERE job_id=?",
                            ((T0 + timedelta(hours=1)).timestamp(), k.job_id))
        seen: list[str] = []
        real_exec = store._exec

        def _exec(cur, sql, params=()):  # right after the claim's locking read, while its transaction is open
            out = real_exec(cur, sql, params)
            if "FOR UPDATE" in sql and not seen:
                seen.append(_write_from_another_instance(database, later[-1]))
            return out

        store._exec = _exec
        claimed = store.claim_due("a", T0 + timedelta(minutes=1), 60, 5, light=bulk, by_creation=bulk)
        assert len(claimed) == 5 and not {tj.key for tj in claimed} & set(later)
        assert seen == ["written"], f"a job not due was locked by the claim: {seen}"
    finally:
        store.close()
