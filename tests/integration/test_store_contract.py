"""One contract, every store: SQLite and MySQL (MariaDB here) must behave the same."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobwatch.core.models import Job, JobKey, JobState, Notice, NoticeKind
from jobwatch.store import PollRecord, Transition, open_store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
K1 = JobKey("ap-guangzhou", "examplebucket-1250000000", "b3deffea2f84911ec9cb15254008618d9")
K2 = JobKey("ap-guangzhou", "examplebucket-1250000000", "j2")
K3 = JobKey("ap-beijing", "other-1250000001", "j3")


def _job(job_id: str, state: str) -> Job:
    return Job(job_id=job_id, name="demo", type="Workflow", state=JobState.parse(state), state_raw=state)


def _notice(key: JobKey, idem: str, to_state: str = "Running") -> Notice:
    return Notice(idem, NoticeKind.TRANSITION, key, "Submitted", to_state, T0, job={"job_id": key.job_id},
                  tags={"team": "media"})


def test_migrate_is_idempotent(store):
    assert store.migrate() == store.migrate() == 3


def test_track_is_idempotent_and_get_returns_record(store):
    assert store.track([K1, K2], T0, tags={"team": "media"}) == [True, True]
    assert store.track([K1], T0) == [False]
    tj = store.get(K1)
    assert tj is not None and tj.key == K1 and tj.active and tj.state is None
    assert tj.first_seen == T0 and tj.next_poll_at == T0 and tj.tags == {"team": "media"}
    assert store.get(K3) is None
    assert {t.key for t in store.list_jobs()} == {K1, K2}


def test_claim_first_claim_live_lease_refused_expired_taken(store):
    store.track([K1, K2], T0)
    first = store.claim_due("a", T0, 60, 10)
    assert sorted(t.key for t in first) == sorted([K1, K2])
    assert all(t.lease_owner == "a" for t in first)
    assert store.claim_due("b", T0 + timedelta(seconds=59), 60, 10) == []  # live lease refused
    taken = store.claim_due("b", T0 + timedelta(seconds=61), 60, 10)  # expired lease taken
    assert sorted(t.key for t in taken) == sorted([K1, K2]) and all(t.lease_owner == "b" for t in taken)


def test_claim_respects_due_time_order_and_limit(store):
    store.track([K1], T0)
    store.track([K2], T0 - timedelta(seconds=30))
    store.track([K3], T0 + timedelta(seconds=30))  # not due yet at T0
    got = store.claim_due("a", T0, 60, 1)
    assert [t.key for t in got] == [K2]  # earliest next poll first
    got = store.claim_due("a", T0, 60, 10)
    assert [t.key for t in got] == [K1]


def test_claim_by_keys_ignores_due_time_but_not_leases(store):
    store.track([K1, K2], T0 + timedelta(hours=1))
    got = store.claim_due("a", T0, 60, 10, keys=[K1])
    assert [t.key for t in got] == [K1]
    got_b = store.claim_due("b", T0, 60, 10, keys=[K1, K2])
    assert [t.key for t in got_b] == [K2]  # K1 is leased by a
    assert store.get(K2).lease_owner == "b" and store.get(K1).lease_owner == "a"


def test_claim_by_keys_due_only_skips_keys_not_yet_due(store):
    store.track([K1], T0)
    store.track([K2], T0 + timedelta(hours=1))
    got = store.claim_due("a", T0, 60, 10, keys=[K1, K2], due_only=True)
    assert [t.key for t in got] == [K1]
    assert store.get(K2).lease_owner is None


def test_claim_refuses_zero_lease(store):
    from jobwatch.core.errors import StoreError

    store.track([K1], T0)
    with pytest.raises(StoreError):
        store.claim_due("a", T0, 0, 10)


def test_record_poll_writes_state_history_and_notice_atomically(store):
    store.track([K1], T0)
    (tj,) = store.claim_due("a", T0, 60, 10)
    after = tj.evolve(state="Running", job=_job(K1.job_id, "Running"), last_seen=T0, last_change=T0,
                      next_poll_at=T0 + timedelta(seconds=30), transitions=1)
    tr = Transition(K1, 1, None, "Running", T0, None, None, None)
    n = _notice(K1, "k1#1:Running")
    assert store.record_polls("a", [PollRecord(tj, after, [tr], [n])]) == [True]
    got = store.get(K1)
    assert got.state == "Running" and got.lease_owner is None and got.version == tj.version + 1
    assert got.job.state is JobState.RUNNING and got.polls == 1
    assert [(h.seq, h.from_state, h.to_state) for h in store.history(K1)] == [(1, None, "Running")]
    (entry,) = store.list_outbox()
    assert entry.notice.idempotency_key == "k1#1:Running" and entry.status == "pending"
    assert entry.notice.tags == {"team": "media"} and entry.notice.key == K1


def test_record_poll_refused_after_lease_lost(store):
    store.track([K1], T0)
    (tj,) = store.claim_due("a", T0, 60, 10)
    (tj_b,) = store.claim_due("b", T0 + timedelta(seconds=61), 60, 10)  # a's lease expired, b took it
    after = tj.evolve(state="Running", transitions=1)
    tr = Transition(K1, 1, None, "Running", T0)
    assert store.record_polls("a", [PollRecord(tj, after, [tr], [_notice(K1, "x")])]) == [False]
    assert store.history(K1) == [] and store.list_outbox() == []  # nothing half-written
    assert store.get(K1).lease_owner == "b"


def test_finish_notice_needs_the_lease(store):
    """A drain whose lease ran out, and whose notice another drain took over, cannot overwrite the outcome."""
    store.track([K1], T0)
    store.add_notices([_notice(K1, "slow")], T0)
    (mine,) = store.claim_notices("a", T0, 60, 10)
    (theirs,) = store.claim_notices("b", T0 + timedelta(seconds=61), 60, 10)  # a's lease expired
    assert theirs.notice.id == mine.notice.id
    assert store.finish_notice(mine.notice.id, "a", "dead", 9, None, "late", T0) is False
    assert store.finish_notice(theirs.notice.id, "b", "done", 1, None, None, T0) is True
    assert [e.notice.idempotency_key for e in store.list_outbox(status="done")] == ["slow"]
    assert store.finish_notice(mine.notice.id, "a", "dead", 9, None, "late", T0) is False  # done stays done


def test_duplicate_notice_key_is_dropped(store):
    store.track([K1], T0)
    assert store.add_notices([_notice(K1, "same")], T0) == 1
    assert store.add_notices([_notice(K1, "same")], T0) == 0
    assert len(store.list_outbox()) == 1


def test_outbox_claim_deliver_retry_dead(store):
    store.track([K1], T0)
    store.add_notices([_notice(K1, "n1"), _notice(K1, "n2")], T0)
    claimed = store.claim_notices("a", T0, 60, 10)
    assert [e.notice.idempotency_key for e in claimed] == ["n1", "n2"]
    assert store.claim_notices("b", T0, 60, 10) == []  # leased
    n1, n2 = claimed
    store.record_delivery(n1.notice.id, "webhook:ops", True, None, T0)
    assert store.finish_notice(n1.notice.id, "a", "done", 1, None, None, T0) is True
    store.record_delivery(n2.notice.id, "webhook:ops", False, "HTTP 500", T0)
    assert store.finish_notice(n2.notice.id, "a", "pending", 1, T0 + timedelta(seconds=30), "HTTP 500", T0)
    assert store.claim_notices("a", T0 + timedelta(seconds=10), 60, 10) == []  # not due yet
    (again,) = store.claim_notices("a", T0 + timedelta(seconds=31), 60, 10)
    assert again.notice.idempotency_key == "n2" and again.attempts == 1
    assert again.deliveries["webhook:ops"].status == "failed"
    store.record_delivery(n2.notice.id, "webhook:ops", False, "HTTP 500", T0, dead=True)
    store.finish_notice(n2.notice.id, "a", "dead", 2, None, "HTTP 500", T0)
    assert [e.notice.idempotency_key for e in store.list_outbox(status="dead")] == ["n2"]
    assert store.retry_notice(n2.notice.id, T0) is True
    (retried,) = store.claim_notices("a", T0, 60, 10)
    assert retried.notice.idempotency_key == "n2" and retried.attempts == 0
    assert retried.deliveries["webhook:ops"].status == "failed"


def test_untrack_and_retrack(store):
    store.track([K1], T0)
    assert store.untrack([K1]) == 1
    assert store.claim_due("a", T0, 60, 10) == []
    assert store.track([K1], T0) == [False]
    assert store.get(K1).active


def test_watermarks(store):
    assert store.get_watermark("ap-guangzhou", "examplebucket-1250000000") is None
    store.set_watermark("ap-guangzhou", "examplebucket-1250000000", T0, T0)
    store.set_watermark("ap-guangzhou", "examplebucket-1250000000", T0 + timedelta(hours=1), T0)
    assert store.get_watermark("ap-guangzhou", "examplebucket-1250000000") == T0 + timedelta(hours=1)


def _one_final_one_running_notices_done(store):
    """K1 ended (Success), K2 runs; each has one history row and one delivered notice, all at T0."""
    store.track([K1, K2], T0)
    for tj in store.claim_due("a", T0, 60, 10):
        final = tj.key == K1
        after = tj.evolve(state="Success" if final else "Running", active=not final, last_change=T0, transitions=1)
        store.record_polls("a", [PollRecord(tj, after, [Transition(tj.key, 1, None, after.state, T0)],
                                            [_notice(tj.key, f"{tj.key}#1")])])
    for e in store.claim_notices("a", T0, 60, 10):
        store.finish_notice(e.notice.id, "a", "done", 1, None, None, T0)


def test_purge_removes_old_final_jobs_history_and_done_notices(store):
    _one_final_one_running_notices_done(store)
    counts = store.purge(T0 + timedelta(days=1))
    assert counts == {"jobs": 1, "history": 1, "outbox": 2, "poll_errors": 0}
    assert store.get(K1) is None and store.get(K2) is not None and len(store.history(K2)) == 1


def test_counts(store):
    store.track([K1, K2], T0)
    store.add_notices([_notice(K1, "n1")], T0)
    c = store.counts()
    assert c["jobs.New"] == 2 and c["outbox.pending"] == 1


def test_open_store_rejects_bad_urls():
    from jobwatch.core.errors import ValidationError

    with pytest.raises(ValidationError, match="store_url"):
        open_store("postgres://x/y")
    with pytest.raises(ValidationError) as ei:
        open_store("mysql://u:hunter22@/")
    assert "hunter22" not in str(ei.value)


def test_mysql_unreachable_is_store_unavailable():
    from jobwatch.core.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable) as ei:
        open_store("mysql://root:s3cretpw@127.0.0.1:1/none")
    assert "s3cretpw" not in str(ei.value)


def test_purge_in_batches_reports_progress(store):
    keys = [JobKey("ap-guangzhou", "examplebucket-1250000000", f"p{i}") for i in range(7)]
    store.track(keys, T0)
    for tj in store.claim_due("a", T0, 60, 100):
        after = tj.evolve(state="Cancel", active=False, last_change=T0, transitions=1)
        store.record_polls("a", [PollRecord(tj, after, [Transition(tj.key, 1, None, "Cancel", T0)], [])])
    seen = []
    counts = store.purge(T0 + timedelta(days=1), batch=3, progress=seen.append)
    assert counts == {"jobs": 7, "history": 7, "outbox": 0, "poll_errors": 0}
    assert [c["jobs"] for c in seen] == [3, 6, 7]
    assert store.list_jobs() == []


# -- what the operator CLI needs (issue 16) ---------------------------------------------------------------------
def test_find_keys_resolves_a_bare_job_id_in_any_bucket(store):
    """`jobwatch history <jobId>` names no bucket: the store finds every key with that job ID."""
    other = JobKey("ap-beijing", "other-1250000001", K2.job_id)
    store.track([K1, K2, other], T0)
    assert store.find_keys(K1.job_id) == [K1]
    assert sorted(store.find_keys(K2.job_id)) == sorted([K2, other])
    assert store.find_keys("nosuchjob") == []


def test_track_without_reactivate_leaves_an_untracked_job_alone(store):
    """Discovery must not re-track a job the operator untracked (issue 16 item 5); `track` still does."""
    store.track([K1, K2], T0)
    store.untrack([K1])
    assert store.track([K1, K2, K3], T0, reactivate=False) == [False, False, True]
    assert not store.get(K1).active and store.get(K3).active
    assert store.track([K1], T0) == [False] and store.get(K1).active


def test_list_jobs_pages_by_key_and_counts(store):
    """`status` pages through every row instead of stopping silently at a limit."""
    keys = sorted(JobKey("ap-guangzhou", "examplebucket-1250000000", f"p{i:02d}") for i in range(7))
    store.track(keys, T0)
    store.untrack(keys[:2])
    first = store.list_jobs(limit=3)
    second = store.list_jobs(limit=3, after=first[-1].key)
    third = store.list_jobs(limit=3, after=second[-1].key)
    assert [t.key for t in first + second + third] == keys
    assert store.count_jobs() == 7 and store.count_jobs(active=True) == 5 and store.count_jobs(active=False) == 2
    assert [t.key for t in store.list_jobs(active=True, limit=2, after=keys[3])] == keys[4:6]


def test_purge_dry_run_counts_and_deletes_nothing(store):
    _one_final_one_running_notices_done(store)
    assert store.purge(T0 + timedelta(days=1), dry_run=True) == {"jobs": 1, "history": 1, "outbox": 2,
                                                                 "poll_errors": 0}
    assert store.get(K1) is not None and len(store.list_outbox()) == 2
    assert store.purge(T0 + timedelta(days=1)) == {"jobs": 1, "history": 1, "outbox": 2, "poll_errors": 0}


def test_open_store_refuses_unknown_query_options(tmp_path):
    """`?mode=ro` or `?ssl=1` used to be dropped silently: the store would not be what the operator asked for."""
    from jobwatch.core.errors import ValidationError

    with pytest.raises(ValidationError) as ei:
        open_store(f"sqlite:///{tmp_path}/x.db?mode=ro")
    assert "store_url" in str(ei.value) and "mode" in str(ei.value)
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "x.db?mode=ro").exists()
    with pytest.raises(ValidationError) as ei:
        open_store("mysql://u:hunter22@127.0.0.1:3306/db?ssl=1&charset=utf8")
    assert "ssl" in str(ei.value) and "hunter22" not in str(ei.value)


# --- status displays (the status page's queries) ------------------------------------------------------------------

def _populated(store):
    from fixtures.webdata import populate

    store.migrate()
    return populate(store, 30)


def test_query_jobs_filters_orders_problems_first_and_pages(store):
    from jobwatch.core.records import JobQuery

    data = _populated(store)
    page = store.query_jobs(JobQuery(limit=5))
    assert page.total == 30 and len(page.jobs) == 5
    assert [t.key for t in page.jobs[:2]] == [data.stalled_key, data.erroring_key]
    assert [t.state for t in page.jobs[2:5]] == ["Failed"] * 3
    everything = store.query_jobs(JobQuery(limit=100)).jobs
    paged = [t for off in range(0, 30, 7) for t in store.query_jobs(JobQuery(offset=off, limit=7)).jobs]
    assert [t.key for t in paged] == [t.key for t in everything] and len(set(t.key for t in paged)) == 30
    failed = store.query_jobs(JobQuery(state="Failed"))
    assert failed.total == 5 and {t.state for t in failed.jobs} == {"Failed"}
    assert store.query_jobs(JobQuery(bucket="archive-1250000000")).total == 10
    assert store.query_jobs(JobQuery(state="Failed", bucket="archive-1250000000")).total == 5
    assert store.query_jobs(JobQuery(tag="team=search")).total == 9  # every third job but the first
    assert store.query_jobs(JobQuery(tag="env")).total == 29  # the key alone: any value
    assert store.query_jobs(JobQuery(tag='team="><script>alert(2)</script>')).total == 1
    assert store.query_jobs(JobQuery(tag="team=sea%")).total == 0  # LIKE wildcards are literal
    assert store.query_jobs(JobQuery(tag="team=se_rch")).total == 0
    store.track([K1], T0)
    assert [t.key for t in store.query_jobs(JobQuery(state="New")).jobs] == [K1]


def test_job_facets_and_job_notices(store):
    data = _populated(store)
    facets = store.job_facets()
    assert facets["buckets"] == sorted({k.bucket for k in data.keys})
    assert {"team=media", "team=search", "env=prod", "env=staging"} <= set(facets["tags"])
    notices = store.job_notices(data.stalled_key)
    assert [n.notice.kind.value for n in notices] == ["transition", "transition", "stalled"]
    assert all(n.notice.key == data.stalled_key for n in notices)
    assert all(set(n.deliveries) == {"webhook:ops", "wecom:media"} for n in notices)
    assert store.job_notices(K3) == []
def _observe(store, keys, state="Running"):
    """Claim ``keys`` and record one full observation each (state, job JSON), returning the claimed records."""
    claimed = store.claim_due("a", T0, 60, 10)
    recs = [PollRecord(tj, tj.evolve(state=state, job=_job(tj.key.job_id, state), last_seen=T0, last_change=T0,
                                     next_poll_at=T0, transitions=1)) for tj in claimed if tj.key in keys]
    assert store.record_polls("a", recs) == [True] * len(recs)


def _raw(store, key, column):
    with store._tx(write=False) as cur:
        store._exec(cur, f"SELECT {column} FROM jw_jobs WHERE region=? AND bucket=? AND job_id=?",
                    (key.region, key.bucket, key.job_id))
        return cur.fetchone()[0]


def _set_raw(store, key, column, value):
    with store._tx() as cur:
        store._exec(cur, f"UPDATE jw_jobs SET {column}=? WHERE region=? AND bucket=? AND job_id=?",
                    (value, key.region, key.bucket, key.job_id))


def test_steady_poll_writes_only_its_poll_bookkeeping(store):
    store.track([K1, K2], T0)
    _observe(store, {K1, K2})
    stored_json = _raw(store, K1, "job_json")
    t1 = T0 + timedelta(seconds=40)
    claimed = {tj.key: tj for tj in store.claim_due("a", t1, 60, 10)}
    # Marks only a full update would overwrite: the steady statement must leave them as they are.
    _set_raw(store, K1, "last_change", 123.0)
    _set_raw(store, K2, "last_change", 123.0)
    same = claimed[K1].evolve(job=_job(K1.job_id, "Running"), last_seen=t1, next_poll_at=t1 + timedelta(seconds=60),
                              poll_interval=60.0)  # an equal job, a new object: steady
    changed = claimed[K2].evolve(job=Job(job_id=K2.job_id, name="renamed", type="Workflow", state=JobState.RUNNING,
                                         state_raw="Running"), last_seen=t1, next_poll_at=t1)
    assert store.record_polls("a", [PollRecord(claimed[K1], same), PollRecord(claimed[K2], changed)]) == [True, True]
    one, two = store.get(K1), store.get(K2)
    assert _raw(store, K1, "last_change") == 123.0 and _raw(store, K1, "job_json") == stored_json
    assert one.last_seen == t1 and one.next_poll_at == t1 + timedelta(seconds=60) and one.poll_interval == 60.0
    assert one.polls == 2 and one.version == claimed[K1].version + 1 and one.lease_owner is None
    assert _raw(store, K2, "last_change") != 123.0 and two.job.name == "renamed"  # a changed job: full update


def test_light_claim_leaves_the_job_undecoded_and_keeps_it_on_write(store):
    store.track([K1], T0)
    _observe(store, {K1})
    full = store.get(K1)
    t1 = T0 + timedelta(seconds=40)
    (tj,) = store.claim_due("a", t1, 60, 10, light=True)
    assert tj.light and tj.job.job_id == K1.job_id and tj.job.type == "Workflow" and tj.job.state_raw == "Running"
    assert tj.job_json == _raw(store, K1, "job_json")
    assert tj.hydrated().job == full.job and not tj.hydrated().light
    # A failed poll keeps the stub in memory: the stored job must survive it untouched.
    failed = tj.evolve(error_count=1, last_error="boom", next_poll_at=t1)
    assert store.record_polls("a", [PollRecord(tj, failed)]) == [True]
    assert store.get(K1).job == full.job and store.get(K1).error_count == 1




# --- children of batch jobs (schema version 2) ------------------------------------------------------------------

from jobwatch.core.children import ChildJob, ChildKind  # noqa: E402
from jobwatch.core.progress import ChildrenUpdate, Progress  # noqa: E402


def _child(cid: str, state: str, second: int = 0, **kw) -> ChildJob:
    return ChildJob(cid, ChildKind.JOB, f"in/{cid}.mp4", state, created_at=T0 + timedelta(seconds=second), **kw)


def _polled(store, key: JobKey, state: str, now: datetime) -> None:
    """The engine's write of one poll: the batch seen in ``state``."""
    store.track([key], now)
    tj = store.claim_due("e", now, 60, 10, keys=[key])[0]
    job = Job(job_id=key.job_id, name="b", type="Job", state=JobState.parse(state), state_raw=state)
    final = state in ("Success", "Failed", "Cancel")
    after = tj.evolve(state=state, job=job, last_seen=now, last_change=now, active=not final, transitions=1)
    assert store.record_polls("e", [PollRecord(tj, after)]) == [True]


def test_upgrade_from_schema_1_adds_the_children_and_notice_detail(store_url):
    """A store written by the previous release (version 1: no children tables, no detail column) upgrades in
    place, keeps its rows, and then stores notice details and children."""
    s = open_store(store_url, migrate=False)
    v1_outbox = ("CREATE TABLE jw_outbox (id INTEGER PRIMARY KEY {auto}, idem_key VARCHAR(255) NOT NULL UNIQUE, "
                 "kind VARCHAR(32) NOT NULL, region VARCHAR(32) NOT NULL, bucket VARCHAR(64) NOT NULL, "
                 "job_id VARCHAR(128) NOT NULL, from_state VARCHAR(32), to_state VARCHAR(32), observed_at DOUBLE "
                 "NOT NULL, job_json TEXT, tags_json TEXT, created_at DOUBLE NOT NULL, status VARCHAR(16) NOT NULL, "
                 "attempts INT NOT NULL DEFAULT 0, next_attempt_at DOUBLE, lease_owner VARCHAR(128), lease_expires "
                 "DOUBLE, last_error TEXT, delivered_at DOUBLE)")
    auto = "AUTOINCREMENT" if store_url.startswith("sqlite") else "AUTO_INCREMENT"
    with s._tx() as cur:
        cur.execute(v1_outbox.format(auto=auto))
        cur.execute("CREATE TABLE jw_meta (k VARCHAR(64) PRIMARY KEY, v VARCHAR(255) NOT NULL)")
        cur.execute("INSERT INTO jw_meta (k, v) VALUES ('schema_version', '1')")
        cur.execute("INSERT INTO jw_outbox (idem_key, kind, region, bucket, job_id, observed_at, created_at, status) "
                    "VALUES ('old#1', 'transition', 'ap-guangzhou', 'examplebucket-1250000000', 'j2', 1, 1, 'done')")
    assert s.migrate() == 3 and s.migrate() == 3
    assert [e.notice.idempotency_key for e in s.list_outbox()] == ["old#1"]
    n = Notice("new#1", NoticeKind.CHILDREN_FAILED, K2, None, None, T0, detail={"progress": {"total": 3}})
    assert s.add_notices([n], T0) == 1
    assert s.list_outbox(status="pending")[0].notice.detail == {"progress": {"total": 3}}
    s.close()


def _indexes(store, table: str) -> dict[str, list[str]]:
    """Index name -> its columns, in order (either dialect)."""
    out: dict[str, list[str]] = {}
    with store._tx(write=False) as cur:
        if store.placeholder == "?":
            cur.execute(f"SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='{table}' AND sql IS NOT NULL")
            for (name,) in cur.fetchall():
                cur.execute(f"PRAGMA index_info({name})")
                out[name] = [c for _, _, c in sorted(cur.fetchall())]
        else:
            cur.execute("SELECT index_name, column_name FROM information_schema.statistics WHERE "
                        f"table_schema=DATABASE() AND table_name='{table}' AND index_name<>'PRIMARY' "
                        "ORDER BY index_name, seq_in_index")
            for name, col in cur.fetchall():
                out.setdefault(name, []).append(col)
    return out


def test_upgrade_from_schema_2_indexes_the_claim_order_and_adds_the_fingerprint(store_url):
    """A version-2 store (due index on (active, next_poll_at), no job_fp) gains the claim index and the column in
    place, keeps its rows, and a second migrate (another instance starting) changes nothing."""
    s = open_store(store_url)
    s.track([K1], T0)
    with s._tx() as cur:  # back to what version 2 had
        if s.placeholder == "?":
            cur.execute("DROP INDEX jw_jobs_claim")
            cur.execute("CREATE INDEX jw_jobs_due ON jw_jobs (active, next_poll_at)")
            cur.execute("ALTER TABLE jw_jobs DROP COLUMN job_fp")
        else:
            cur.execute("ALTER TABLE jw_jobs DROP INDEX jw_jobs_claim, ADD INDEX jw_jobs_due (active, next_poll_at), "
                        "DROP COLUMN job_fp")
        cur.execute("UPDATE jw_meta SET v='2' WHERE k='schema_version'")
    assert _indexes(s, "jw_jobs") == {"jw_jobs_due": ["active", "next_poll_at"]}
    assert s.migrate() == 3 and s.migrate() == 3
    assert _indexes(s, "jw_jobs") == {"jw_jobs_claim": ["active", "next_poll_at", "first_seen"]}
    with s._tx(write=False) as cur:
        cur.execute("SELECT job_id, job_fp FROM jw_jobs")
        assert cur.fetchall() in ([(K1.job_id, None)], ((K1.job_id, None),))
    s.close()


def test_children_due_after_each_poll_and_once_after_the_end(store):
    _polled(store, K1, "Running", T0)
    work = store.claim_children("a", T0, 60, 10)
    assert [w.key for w in work] == [K1] and work[0].progress == Progress() and work[0].batch_active
    assert store.claim_children("b", T0, 60, 10) == []  # leased
    p = Progress(total=2, running=2, refreshed_at=T0)
    assert store.record_children("a", K1, ChildrenUpdate(p, {"job": {"wm": 1}}, (_child("c1", "Running"),
                                                                                  _child("c2", "Running", 1))), T0)
    assert store.claim_children("a", T0 + timedelta(seconds=5), 60, 10) == []  # not polled since
    assert store.get_progress(K1) == p
    # the batch ends: one more refresh is due, and after it is marked complete, none
    tj = store.claim_due("e", T0 + timedelta(seconds=30), 60, 10, keys=[K1])[0]
    job = Job(job_id=K1.job_id, name="b", type="Job", state=JobState.SUCCESS, state_raw="Success")
    now = T0 + timedelta(seconds=30)
    assert store.record_polls("e", [PollRecord(tj, tj.evolve(state="Success", job=job, active=False, last_seen=now,
                                                             last_change=now))]) == [True]
    (w,) = store.claim_children("a", now, 60, 10)
    assert w.batch_state == "Success" and not w.batch_active and w.cursor == {"job": {"wm": 1}}
    done = Progress(total=2, succeeded=1, failed=1, refreshed_at=now, complete=True)
    assert store.record_children("a", K1, ChildrenUpdate(done, {}, (_child("c1", "Success"),
                                                                     _child("c2", "Failed", 1, code="E1"))), now)
    assert store.claim_children("a", now + timedelta(hours=1), 60, 10) == []
    assert [c.child_id for c in store.list_children(K1, failed_only=True)] == ["c2"]
    assert store.list_children(K1, failed_only=True)[0].code == "E1"


def test_named_batches_are_leased_for_a_callback_whether_due_or_not(store):
    """A callback's child is written under the batch's lease like a refresh's: claim_children(keys, due_only=False)
    leases a tracked batch that is not due, never one another owner holds, nor one untracked or never polled."""
    from jobwatch.core.errors import StoreError

    _polled(store, K1, "Running", T0)
    store.claim_children("a", T0, 60, 10)
    p = Progress(total=1, running=1, refreshed_at=T0)
    assert store.record_children("a", K1, ChildrenUpdate(p, {"job": {"wm": 1}}, (_child("c1", "Running"),)), T0)
    assert store.claim_children("b", T0, 60, 10, keys=[K1]) == []  # not due
    (w,) = store.claim_children("b", T0, 60, 10, keys=[K1], due_only=False)
    assert (w.key, w.progress, w.cursor, w.lease_owner) == (K1, p, {"job": {"wm": 1}}, "b")
    assert store.claim_children("c", T0, 60, 10, keys=[K1], due_only=False) == []  # b holds it
    done = Progress(total=1, succeeded=1, refreshed_at=T0)
    assert store.record_children("b", K1, ChildrenUpdate(done, {"job": {"wm": 1}}, (_child("c1", "Success"),)), T0)
    assert store.get_progress(K1) == done and store.known_children(K1, ["c1"]) == {"c1": "Success"}
    store.track([K2], T0)  # tracked, never polled: nothing to read its children by
    assert store.claim_children("c", T0, 60, 10, keys=[K2, K3], due_only=False) == []
    store.untrack([K1])
    assert store.claim_children("c", T0, 60, 10, keys=[K1], due_only=False) == []
    with pytest.raises(StoreError):
        store.claim_children("c", T0, 60, 10, due_only=False)  # only named batches


def test_a_lost_children_lease_writes_nothing(store):
    _polled(store, K1, "Running", T0)
    store.claim_children("a", T0, 60, 10)
    later = T0 + timedelta(seconds=61)
    assert [w.key for w in store.claim_children("b", later, 60, 10)] == [K1]  # a's lease expired, b took it
    assert not store.record_children("a", K1, ChildrenUpdate(Progress(total=9), {}, (_child("x", "Running"),)), later)
    assert store.known_children(K1, ["x"]) == {} and store.get_progress(K1) == Progress()


def test_children_upsert_known_pending_find_and_paging(store):
    _polled(store, K1, "Running", T0)
    store.claim_children("a", T0, 60, 10)
    kids = tuple(_child(f"c{i:03d}", "Running" if i % 3 else "Success", i) for i in range(250))
    assert store.record_children("a", K1, ChildrenUpdate(Progress(total=250), {}, kids, release=False), T0)
    assert store.known_children(K1, ["c000", "c001", "nope"]) == {"c000": "Success", "c001": "Running"}
    n, lo, hi = store.pending_children(K1, ChildKind.JOB)
    assert n == 166 and lo == T0 + timedelta(seconds=1) and hi == T0 + timedelta(seconds=248)
    # the same children again, now failed: updated in place, not duplicated
    again = tuple(_child(c.child_id, "Failed", i, code="InternalError", message="boom") for i, c in enumerate(kids))
    assert store.record_children("a", K1, ChildrenUpdate(Progress(total=250), {}, again), T0)
    assert store.pending_children(K1, ChildKind.JOB)[0] == 0
    first = store.list_children(K1, failed_only=True, limit=100)
    rest = store.list_children(K1, failed_only=True, limit=1000, after=first[-1].child_id)
    assert len(first) == 100 and len(rest) == 150 and first[-1].child_id < rest[0].child_id
    assert rest[0].message == "boom" and rest[0].object_key == f"in/{rest[0].child_id}.mp4"
    assert store.find_child(K1.bucket, "c007") == [K1] and store.find_child(K1.bucket, "zz") == []


def test_unsettled_children_counts_the_unfinished_and_the_gone_of_one_list_in_one_read(store):
    _polled(store, K1, "Running", T0)
    store.claim_children("a", T0, 60, 10)
    assert store.unsettled_children(K1, ChildKind.JOB) == ((0, None, None), (0, None, None))
    kids = tuple(_child(f"c{i:03d}", "Running" if i % 2 else "Success", i) for i in range(10))
    other = tuple(ChildJob(f"w{i:03d}", ChildKind.WORKFLOW, f"in/w{i}.mp4", "Running", created_at=T0,
                           workflow_id="w1") for i in range(3))
    # pass 1 saw c001 and c003 only; the unfinished ones created between 0.5 s and 8.5 s it did not see are gone
    assert store.record_children("a", K1, ChildrenUpdate(Progress(total=13), {}, kids + other, release=False), T0)
    seen = tuple(k for k in kids if k.child_id in ("c001", "c003"))
    t0 = T0.timestamp()
    assert store.record_children("a", K1, ChildrenUpdate(Progress(total=13), {}, seen, release=False, touched_pass=1,
                                                         close=("job", None, 1, t0 + 0.5, t0 + 8.5)), T0)
    unfinished, gone = store.unsettled_children(K1, ChildKind.JOB)
    assert unfinished == store.pending_children(K1, ChildKind.JOB) == (3, T0 + timedelta(seconds=1),
                                                                        T0 + timedelta(seconds=9))
    assert gone == store.pending_children(K1, ChildKind.JOB, gone=True) == (2, T0 + timedelta(seconds=5),
                                                                             T0 + timedelta(seconds=7))
    assert store.unsettled_children(K1, ChildKind.WORKFLOW, "w1")[0][0] == 3
    assert store.unsettled_children(K1, ChildKind.WORKFLOW, "w2") == ((0, None, None), (0, None, None))


def test_final_notice_is_held_then_completed_and_released_by_the_children_count(store):
    _polled(store, K1, "Running", T0)
    hold = T0 + timedelta(minutes=10)
    final = Notice("k1#2:Success", NoticeKind.TRANSITION, K1, "Running", "Success", T0, not_before=hold)
    assert store.add_notices([final], T0) == 1
    assert store.claim_notices("o", T0, 60, 10) == []  # held for the children's final count
    store.claim_children("a", T0, 60, 10)
    detail = {"progress": {"total": 2, "failed": 1}, "failed_sample": [{"child_id": "c2"}]}
    assert store.record_children("a", K1, ChildrenUpdate(Progress(total=2), {}, final_detail=detail,
                                                         release_final=True), T0)
    (e,) = store.claim_notices("o", T0, 60, 10)
    assert e.notice.detail == detail and e.notice.payload()["progress"] == {"total": 2, "failed": 1}


def test_callback_refresh_request_makes_a_batch_due(store):
    _polled(store, K1, "Running", T0)
    store.claim_children("a", T0, 60, 10)
    store.record_children("a", K1, ChildrenUpdate(Progress(refreshed_at=T0), {}), T0)
    assert store.claim_children("a", T0 + timedelta(seconds=1), 60, 10) == []
    assert store.request_children_refresh([K1], T0 + timedelta(seconds=2)) == 1
    assert [w.key for w in store.claim_children("a", T0 + timedelta(seconds=3), 60, 10)] == [K1]
    assert [k for k, _ in store.active_in_bucket(K1.bucket)] == [K1]


def test_purge_drops_a_batchs_children_with_it(store):
    _polled(store, K1, "Success", T0)
    store.claim_children("a", T0, 60, 10)
    store.record_children("a", K1, ChildrenUpdate(Progress(total=1), {}, (_child("c1", "Failed"),)), T0)
    store.purge(T0 + timedelta(days=1))
    assert store.get(K1) is None and store.list_children(K1) == [] and store.get_progress(K1) is None
def test_light_claim_reads_type_and_creation_time_whatever_the_name_holds(store):
    store.track([K1], T0)
    (tj,) = store.claim_due("a", T0, 60, 10)
    created = datetime(2026, 1, 1, 8, 0, 1, tzinfo=timezone(timedelta(hours=8)))
    job = Job(job_id=K1.job_id, name='x", "type": "Job", "created_at": "1999-01-01T00:00:00+00:00', type="Workflow",
              state=JobState.RUNNING, state_raw="Running", created_at=created)
    assert store.record_polls("a", [PollRecord(tj, tj.evolve(state="Running", job=job, next_poll_at=T0))]) == [True]
    (light,) = store.claim_due("a", T0, 60, 10, light=True)
    assert (light.job.type, light.job.created_at, light.job.state_raw) == ("Workflow", created, "Running")


def test_lease_holders_name_who_holds_live_leases(store):
    """`poll` that finds nothing due says who holds the jobs and until when (issue 16 item 2)."""
    store.track([K1, K2, K3], T0)
    store.claim_due("a", T0, 60, 2, [K1, K2])
    store.claim_due("b", T0, 30, 1, [K3])
    assert store.lease_holders(T0) == [("a", 2, T0 + timedelta(seconds=60)), ("b", 1, T0 + timedelta(seconds=30))]
    assert store.lease_holders(T0 + timedelta(seconds=45)) == [("a", 2, T0 + timedelta(seconds=60))]
    store.untrack([K1, K2])
    assert store.lease_holders(T0) == [("b", 1, T0 + timedelta(seconds=30))]


def test_failed_polls_are_kept_per_job_latest_first_limited_and_purged_by_age(store):
    from jobwatch.core.records import PollError

    store.track([K1, K2], T0)
    for i in range(5):  # five failed polls of K1, one minute apart, and one of K2
        at = T0 + timedelta(minutes=i)
        claimed = {tj.key: tj for tj in store.claim_due("a", at + timedelta(days=1), 60, 10, keys=[K1, K2])}
        recs = [PollRecord(claimed[K1], claimed[K1].evolve(error_count=i + 1, last_error=f"boom {i}"), (), (),
                           [PollError(K1, at, f"boom {i}")])]
        if i == 0:
            recs.append(PollRecord(claimed[K2], claimed[K2].evolve(error_count=1), (), (),
                                   [PollError(K2, at, "other")]))
        assert store.record_polls("a", recs) == [True] * len(recs)
        store.release([claimed[K2]], "a")
    errors = store.poll_errors(K1)
    assert [(e.at, e.message) for e in errors] == [(T0 + timedelta(minutes=i), f"boom {i}") for i in range(5)]
    assert [e.message for e in store.poll_errors(K1, limit=2)] == ["boom 3", "boom 4"]  # the latest, in order
    assert [e.message for e in store.poll_errors(K2)] == ["other"] and store.poll_errors(K3) == []
    assert store.purge(T0 + timedelta(minutes=2), dry_run=True)["poll_errors"] == 3
    assert store.purge(T0 + timedelta(minutes=2))["poll_errors"] == 3  # K1's first two and K2's
    assert [e.message for e in store.poll_errors(K1)] == ["boom 2", "boom 3", "boom 4"]
    # a batch whose lease was lost writes nothing of it, its failed polls included
    (tj,) = store.claim_due("a", T0 + timedelta(days=2), 60, 10, keys=[K1])
    stale = tj.evolve(version=tj.version - 1)
    assert store.record_polls("a", [PollRecord(stale, tj.evolve(error_count=9), (), (),
                                               [PollError(K1, T0 + timedelta(hours=1), "lost")])]) == [False]
    assert "lost" not in [e.message for e in store.poll_errors(K1)]
def test_a_claim_by_creation_takes_a_buckets_jobs_in_the_order_they_were_tracked(store):
    keys = [JobKey("ap-guangzhou", "examplebucket-1250000000", f"j{i:02d}") for i in range(6)]
    order = [3, 0, 5, 1, 4, 2]
    for n, i in enumerate(order):  # tracked one after the other, each due at a different time
        store.track([keys[i]], T0 + timedelta(seconds=n))
    with store._tx() as cur:
        for i, k in enumerate(keys):
            store._exec(cur, "UPDATE jw_jobs SET next_poll_at=? WHERE job_id=?",
                        ((T0 + timedelta(seconds=20 - i)).timestamp(), k.job_id))
    t = T0 + timedelta(seconds=30)
    assert [tj.key for tj in store.claim_due("a", t, 60, 4, light=True, by_creation=True)] == \
        [keys[i] for i in order[:4]]
    assert [tj.key for tj in store.claim_due("b", t, 60, 4, light=True)] == [keys[4], keys[2]]  # by due time
    # otherwise, light or not


def test_jobs_due_at_the_same_time_are_claimed_in_the_order_they_were_tracked(store):
    """Ties in due time (every job of a steady bulk tick was written in one batch, or made due at once) go to the
    jobs tracked first, not to the smallest job IDs: the first claim of a tick then holds neighbours in creation
    time, which a listing can cover. (MariaDB broke such ties by primary key, so a claim of 10,000 jobs with
    random IDs spread over the whole span and listing never paid: 9,994 single queries.)"""
    keys = [JobKey("ap-guangzhou", "examplebucket-1250000000", f"j{i:02d}") for i in range(8)]
    order = [5, 2, 7, 0, 6, 3, 1, 4]
    for n, i in enumerate(order):
        store.track([keys[i]], T0 + timedelta(seconds=n))
    with store._tx() as cur:
        store._exec(cur, "UPDATE jw_jobs SET next_poll_at=?", ((T0 + timedelta(seconds=20)).timestamp(),))
    t = T0 + timedelta(seconds=30)
    assert [tj.key for tj in store.claim_due("a", t, 60, 3, light=True)] == [keys[i] for i in order[:3]]
    assert [tj.key for tj in store.claim_due("b", t, 60, 3)] == [keys[i] for i in order[3:6]]


def test_the_fingerprint_always_describes_the_stored_job(store):
    """job_fp is written with the job's JSON and read back by every claim; a steady poll of the same answer keeps
    both, an equal JSON under a new fingerprint (the service formats it anew) takes the new one, and a changed
    job rewrites both."""
    from dataclasses import replace

    store.track([K1], T0)
    (tj,) = store.claim_due("a", T0, 60, 10)
    first = replace(_job(K1.job_id, "Running"), fingerprint="fp-1")
    assert store.record_polls("a", [PollRecord(tj, tj.evolve(state="Running", job=first, last_seen=T0,
                                                             last_change=T0, transitions=1))]) == [True]
    t = T0 + timedelta(seconds=1)
    for light in (False, True):
        (tj,) = store.claim_due("a", t, 60, 10, light=light)
        assert tj.job_fp == "fp-1" and tj.light is light
        if not light:
            store.release([tj], "a")
    text = _raw(store, K1, "job_json")
    # the same answer again (its own object, as a listing parses it): steady, nothing re-serialised
    again = replace(first)
    assert store.record_polls("a", [PollRecord(tj, tj.evolve(job=again, last_seen=t))]) == [True]
    assert (_raw(store, K1, "job_fp"), _raw(store, K1, "job_json")) == ("fp-1", text)
    # the same JSON, another fingerprint: the new one is kept
    (tj,) = store.claim_due("a", t, 60, 10)
    assert store.record_polls("a", [PollRecord(tj, tj.evolve(job=replace(first, fingerprint="fp-2"),
                                                              last_seen=t))]) == [True]
    assert (_raw(store, K1, "job_fp"), _raw(store, K1, "job_json")) == ("fp-2", text)
    # a changed job: both rewritten; a job read from JSON (no fingerprint) leaves none
    (tj,) = store.claim_due("a", t, 60, 10)
    done = replace(_job(K1.job_id, "Success"), fingerprint="fp-3")
    assert store.record_polls("a", [PollRecord(tj, tj.evolve(state="Success", job=done, last_seen=t,
                                                              last_change=t, transitions=2))]) == [True]
    assert _raw(store, K1, "job_fp") == "fp-3" and store.get(K1).job.state_raw == "Success"


def test_steady_batch_with_a_lost_lease_writes_exactly_the_records_whose_lease_holds(store):
    """The claim and the steady write of many rows (on MySQL one statement per 500 rows, not one per row) keep
    the lease compare-and-set per row: a record whose lease another poller took is not written, the rest are."""
    keys = [JobKey("ap-guangzhou", "examplebucket-1250000000", f"j{i:03d}") for i in range(7)] + [K3]
    store.track(keys, T0)
    _observe(store, set(keys))
    t1 = T0 + timedelta(seconds=40)
    claimed = {tj.key: tj for tj in store.claim_due("a", t1, 60, 20)}
    assert set(claimed) == set(keys) and all(tj.lease_owner == "a" for tj in claimed.values())
    assert all(_raw(store, k, "lease_owner") == "a" for k in keys)
    lost = keys[3]
    _set_raw(store, lost, "lease_owner", "b")  # another poller took this one over
    recs = [PollRecord(tj, tj.evolve(job=_job(tj.key.job_id, "Running"), last_seen=t1, poll_interval=60.0,
                                     next_poll_at=t1 + timedelta(seconds=60))) for tj in claimed.values()]
    written = store.record_polls("a", recs)
    assert written == [r.before.key != lost for r in recs]
    for r in recs:
        got = store.get(r.before.key)
        if r.before.key == lost:
            assert got.lease_owner == "b" and got.polls == 1 and got.version == r.before.version
        else:
            assert got.lease_owner is None and got.polls == 2 and got.version == r.before.version + 1
            assert got.next_poll_at == t1 + timedelta(seconds=60) and got.last_seen == t1


def test_a_revoked_session_is_refused_until_its_cookie_expires_and_then_forgotten(store):
    t = T0.timestamp()
    assert not store.session_revoked("n1", t)
    store.revoke_session("n1", t + 100, t)
    store.revoke_session("n1", t + 100, t)  # a second logout of the same session (two tabs) is no error
    assert store.session_revoked("n1", t + 99) and not store.session_revoked("n2", t)
    assert not store.session_revoked("n1", t + 100)  # its cookie has expired: nothing left to refuse
    store.revoke_session("n2", t + 500, t + 200)  # the next logout drops what has expired
    with store._tx(write=False) as cur:
        store._exec(cur, "SELECT nonce FROM jw_revoked_sessions")
        assert [r[0] for r in cur.fetchall()] == ["n2"]
