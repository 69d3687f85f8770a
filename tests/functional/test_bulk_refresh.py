"""Bulk refresh against the emulator over real HTTP and real SQLite stores: the listing path records exactly
what the per-job path records, deleted jobs are still confirmed vanished, window edges hold, and throttling or
stale pages in the middle of a listing lose nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fixtures.emulator import TEST_BUCKET, TEST_REGION, TEST_START

from jobwatch.app.engine import Engine
from jobwatch.app.refresh import Refresher
from jobwatch.core.models import JobKey
from jobwatch.core.refresh import RefreshRule
from jobwatch.core.statemachine import PollPolicy
from jobwatch.emulator import FaultRule, Lifecycle
from jobwatch.store import open_store

POLICY = PollPolicy(min_seconds=10, max_seconds=10, backoff=1.0, jitter=0.0, confirmations=2)
# List as soon as there is anything to list (small pages, so a handful of jobs spans several pages and windows).
EAGER = RefreshRule(page_size=3, min_due=1, min_saving=0.01)


@pytest.fixture
def client(emulator_client):
    return emulator_client


@pytest.fixture
def stores(tmp_path):
    made = [open_store(f"sqlite:///{tmp_path / name}.db") for name in ("listing", "single")]
    yield made
    for s in made:
        s.close()


def _engine(store, client, clock, rule: RefreshRule | None = EAGER, **kw):
    refresher = Refresher(client, rule=rule, clock=clock.now) if rule is not None else None
    return Engine(store, client, policy=POLICY, clock=clock.now, concurrency=4, lease_seconds=60,
                  rand=lambda: 0.5, refresher=refresher, **kw)


def _watched(emulator, clock, client, store, n, **create):
    """``n`` jobs a second apart, tracked, and one tick (first sight: one query each); returns (ids, keys,
    engine)."""
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}", created_at=TEST_START - timedelta(seconds=i), **create)
           for i in range(n)]
    keys = [JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids]
    store.track(keys, clock.now())
    engine = _engine(store, client, clock)
    engine.tick()
    return ids, keys, engine


def _single_gets(emulator, since: int = 0):
    return [r for r in emulator.request_log[since:] if r.method == "GET" and r.job_id is not None]


def _list_gets(emulator, since: int = 0):
    return [r for r in emulator.request_log[since:] if r.method == "GET" and r.job_id is None]


def _recorded(store, keys):
    states = {k.job_id: store.get(k).state for k in keys}
    history = {k.job_id: [(h.seq, h.from_state, h.to_state, h.observed_at) for h in store.history(k)] for k in keys}
    notices = sorted((e.notice.idempotency_key, e.notice.kind.value, e.notice.to_state)
                     for e in store.list_outbox(limit=10_000))
    return states, history, notices


def test_listing_and_single_paths_record_the_same_states_and_notices(emulator, emulator_clock, client, stores):
    emulator.lifecycle = Lifecycle(submitted_seconds=15, running_seconds=45, failure_ratio=0.3, jitter=0.9)
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}", type="Job" if i % 3 else "Workflow",
                               created_at=TEST_START - timedelta(seconds=7 * i)) for i in range(24)]
    keys = [JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids]
    listing, single = stores
    a = _engine(listing, client, emulator_clock)
    b = _engine(single, client, emulator_clock, rule=None)
    for s in stores:
        s.track(keys, emulator_clock.now())
    listed = 0
    for step in range(14):
        if step == 3:
            emulator.set_state(TEST_BUCKET, ids[0], "Pause")
        if step == 5:
            emulator.set_state(TEST_BUCKET, ids[0], "Running")
        if step == 4:
            emulator.delete_job(TEST_BUCKET, ids[1])
        listed += a.tick().listed
        b.tick()
        emulator_clock.advance(10)
    assert listed > 0  # the listing path was taken
    assert _recorded(listing, keys) == _recorded(single, keys)
    states, _, notices = _recorded(listing, keys)
    assert states[ids[1]] == "Vanished"
    assert sum(1 for n in notices if n[2] == "Pause") == 1
    a.close()
    b.close()


def test_a_job_deleted_between_ticks_is_still_confirmed_vanished(emulator, emulator_clock, client, stores):
    store = stores[0]
    emulator.jobs.lifecycle = Lifecycle(submitted_seconds=5, running_seconds=3600)  # the others run on meanwhile
    ids, keys, engine = _watched(emulator, emulator_clock, client, store, 7, state="Running")
    gone = ids[3]
    emulator.delete_job(TEST_BUCKET, gone)
    for _ in range(POLICY.confirmations_for("Vanished")):  # NonExist answers spanning vanish_seconds
        emulator_clock.advance(10)
        mark = len(emulator.request_log)
        res = engine.tick()
        assert res.listed == 6 and res.polled == 7
        assert [r.job_id for r in _single_gets(emulator, mark)] == [gone]  # the listing missed it: queried
        assert res.requests == len(_single_gets(emulator, mark)) + len(_list_gets(emulator, mark))
    tj = store.get(JobKey(TEST_REGION, TEST_BUCKET, gone))
    assert tj.state == "Vanished" and not tj.active
    vanished = [e.notice for e in store.list_outbox(limit=100) if e.notice.to_state == "Vanished"]
    assert len(vanished) == 1 and vanished[0].job["job_id"] == gone and vanished[0].job["name"] == "j3"
    engine.close()


def test_a_steady_listing_keeps_each_stored_job_whole_and_still_sees_a_change(emulator, emulator_clock, client,
                                                                             stores):
    """A listed job whose answer is the recorded one is not parsed (its claim's stub stands for it): the stored
    job must stay whole (name, input), never become the stub; a job that changed meanwhile is parsed and moves."""
    store = stores[0]
    emulator.jobs.lifecycle = Lifecycle(submitted_seconds=5, running_seconds=3600)
    ids, keys, engine = _watched(emulator, emulator_clock, client, store, 9, state="Running")
    stored = {k: store.get(k) for k in keys}
    assert all(tj.job_fp for tj in stored.values())  # the first sight recorded each answer's fingerprint
    emulator.set_state(TEST_BUCKET, ids[4], "Cancel")
    emulator_clock.advance(10)
    mark = len(emulator.request_log)
    res = engine.tick()
    assert res.listed == 9 and not _single_gets(emulator, mark)
    for k in keys:
        now = store.get(k)
        if k.job_id == ids[4]:
            assert now.state == "Cancel" and now.job.state_raw == "Cancel" and now.job_fp != stored[k].job_fp
        else:
            assert now.polls == stored[k].polls + 1 and now.job == stored[k].job and now.job.name
            assert now.job.input == stored[k].job.input and now.job_fp == stored[k].job_fp
    (n,) = [e.notice for e in store.list_outbox(limit=100) if e.notice.to_state == "Cancel"]
    assert n.job["name"] == "j4"
    engine.close()


def test_window_edges_are_inclusive_and_times_are_percent_encoded(emulator, emulator_clock, client, stores):
    # Three jobs per second over four seconds: with pages of 3 every window ends and starts on a job's second.
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}", state="Running",
                               created_at=TEST_START - timedelta(seconds=i // 3)) for i in range(12)]
    # Jobs just outside the span are listed by nobody (no window reaches them) and never tracked.
    emulator.create_job(TEST_BUCKET, name="before", created_at=TEST_START - timedelta(seconds=4))
    emulator.create_job(TEST_BUCKET, name="after", created_at=TEST_START + timedelta(seconds=1))
    store = stores[0]
    store.track([JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids], emulator_clock.now())
    engine = _engine(store, client, emulator_clock)
    engine.tick()
    emulator_clock.advance(10)
    mark = len(emulator.request_log)
    res = engine.tick()
    assert res.listed == 12 and not _single_gets(emulator, mark)
    pages = _list_gets(emulator, mark)
    assert len(pages) == res.requests == 4  # one page per window: every edge job was returned by its window
    for r in pages:
        assert "startCreationTime=2026-01-01T0" in r.query and "%2B0800" in r.query and "+" not in r.query
        assert "type=Workflow" in r.query and "orderByTime=Asc" in r.query
    engine.close()


def test_throttling_mid_listing_falls_back_to_queries_and_loses_nothing(emulator, emulator_clock, client, stores):
    store = stores[0]
    ids, keys, engine = _watched(emulator, emulator_clock, client, store, 12, state="Running")
    for jid in ids:
        emulator.set_state(TEST_BUCKET, jid, "Success")
    emulator_clock.advance(10)
    # The second page of every window (and any later one) is refused as too many requests.
    emulator.set_faults([FaultRule(kind="status", status=503, code="SlowDown", path="/inventorytriggerjob",
                                   method="GET", times=2)])
    mark = len(emulator.request_log)
    res = engine.tick()
    refused = [r for r in _list_gets(emulator, mark) if r.status == 503]
    assert len(refused) == 2 and res.throttled >= 2
    assert res.polled == 12 and res.errors == 0
    queried = {r.job_id for r in _single_gets(emulator, mark)}
    assert queried and res.listed + len(queried) == 12
    assert all(store.get(k).state == "Success" for k in keys)
    assert len([e for e in store.list_outbox(limit=100) if e.notice.to_state == "Success"]) == 12
    engine.close()


def test_a_stale_listing_never_moves_a_job_backwards(emulator, emulator_clock, client, stores):
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}", created_at=TEST_START - timedelta(seconds=i))
           for i in range(6)]
    keys = [JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids]
    store = stores[0]
    store.track(keys, emulator_clock.now())
    engine = _engine(store, client, emulator_clock)
    emulator_clock.advance(6)  # Submitted for 5 s: now Running, changed 1 s ago
    engine.tick()  # queried: Running recorded
    assert {store.get(k).state for k in keys} == {"Running"}
    # Lists now answer with each job's previous view (Submitted) while it changed less than 30 s ago.
    emulator.set_faults([FaultRule(kind="stale", path="/inventorytriggerjob", window=30)])
    emulator_clock.advance(10)
    res = engine.tick()
    assert res.listed == 6 and res.transitions == 0
    assert all(store.get(k).state == "Running" and store.get(k).pending_state == "Submitted" for k in keys)
    emulator_clock.advance(30)  # the stale window has passed: the listing shows Running again
    res = engine.tick()
    assert res.listed == 6 and res.transitions == 0
    for k in keys:
        assert store.get(k).pending_state is None
        assert [h.to_state for h in store.history(k)] == ["Running"]
    engine.close()


def test_the_tick_reports_each_buckets_path_and_cost(emulator, emulator_clock, client, stores):
    many = [emulator.create_job(TEST_BUCKET, name=f"m{i}", state="Running",
                                created_at=TEST_START - timedelta(seconds=i)) for i in range(30)]
    other = "otherbucket-1250000000"
    few = [emulator.create_job(other, name=f"f{i}", state="Running") for i in range(2)]
    store = stores[0]
    store.track([JobKey(TEST_REGION, TEST_BUCKET, i) for i in many] + [JobKey(TEST_REGION, other, i) for i in few],
                emulator_clock.now())
    engine = _engine(store, client, emulator_clock, rule=RefreshRule(page_size=10, min_due=5))
    engine.tick()
    emulator_clock.advance(10)
    res = engine.tick()
    by = {b["bucket"]: b for b in res.as_dict()["refresh"]}
    assert by[TEST_BUCKET]["path"] == "list" and by[TEST_BUCKET]["listed"] == 30
    assert by[TEST_BUCKET]["list_requests"] == 3
    assert by[other]["path"] == "single" and by[other]["single"] == 2
    assert res.requests == 3 + 2 and res.polled == 32
    engine.close()


def test_a_tick_goes_on_claiming_after_a_batch_listed_whole(emulator, emulator_clock, client, stores):
    """More due jobs than one light claim holds: each claim is listed whole (nothing left for single queries),
    and the tick claims the next until none is due (the cooperative-stop engine once ended the tick there)."""
    store = stores[0]
    ids, keys, _ = _watched(emulator, emulator_clock, client, store, 12)
    engine = _engine(store, client, emulator_clock, batch_size=4, list_batch_size=4)
    emulator_clock.advance(10)
    res = engine.tick()
    assert res.polled == 12 and res.left == 0, res


def test_a_tick_over_named_keys_lists_them_too(emulator, emulator_clock, client, stores):
    """A fan-out shard polls named keys: those already observed are listed like a due tick's."""
    store = stores[0]
    ids, keys, engine = _watched(emulator, emulator_clock, client, store, 9, state="Running")
    fresh = emulator.create_job(TEST_BUCKET, name="fresh", state="Running", created_at=TEST_START)
    fresh_key = JobKey(TEST_REGION, TEST_BUCKET, fresh)
    store.track([fresh_key], emulator_clock.now())
    mark = len(emulator.request_log)
    res = engine.tick(keys=keys[:6] + [fresh_key])
    assert res.polled == 7 and res.listed == 6
    assert [r.job_id for r in _single_gets(emulator, mark)] == [fresh]  # never observed: queried
    engine.close()


def test_a_span_busy_with_jobs_not_due_is_learnt_and_queried_one_by_one_next_time(emulator, emulator_clock, client,
                                                                                     stores):
    store = stores[0]
    rule = RefreshRule(page_size=10, min_due=5, min_saving=3)
    # 10 watched jobs, with 40 unwatched ones created between them
    ids = []
    for i in range(50):
        jid = emulator.create_job(TEST_BUCKET, name=f"j{i}", state="Running",
                                  created_at=TEST_START - timedelta(seconds=i))
        if i % 5 == 0:
            ids.append(jid)
    keys = [JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids]
    store.track(keys, emulator_clock.now())
    engine = _engine(store, client, emulator_clock, rule=rule)
    engine.tick()
    emulator_clock.advance(10)
    # Listing looks cheap (10 due, 1 page estimated). Its page budget (3) runs out after 6 of them (the span
    # holds 5 jobs per due one): the other 4 are queried one by one.
    first = engine.tick()
    assert first.listed == 6 and first.requests == 3 + 4
    assert engine.refresher.density(TEST_REGION, TEST_BUCKET) == 5.0
    emulator_clock.advance(10)
    second = engine.tick()  # now the rule knows: 5 pages for 10 jobs is not worth it (min_saving 3)
    assert second.listed == 0 and second.requests == 10 and second.buckets[f"{TEST_REGION}/{TEST_BUCKET}"]["path"] == "single"
    engine.close()


def test_a_listing_older_than_the_recorded_answer_is_not_applied(emulator, emulator_clock, client, stores):
    """Another poller (its clock 100 s ahead) recorded answers later than this poller's listing was asked for:
    the listing is not applied to those jobs; they are queried instead."""
    store = stores[0]
    ids, keys, engine = _watched(emulator, emulator_clock, client, store, 8, state="Running")
    ahead = type(emulator_clock)(start=emulator_clock.now() + timedelta(seconds=100))
    other = _engine(store, client, ahead)
    assert other.tick(keys=keys[:3]).listed == 3  # recorded with last_seen 100 s after this poller's now
    mark = len(emulator.request_log)
    res = engine.tick(keys=keys)
    assert res.polled == 8 and res.listed == 5
    assert sorted(r.job_id for r in _single_gets(emulator, mark)) == sorted(ids[:3])
    engine.close()
    other.close()


def test_claims_grow_only_once_listing_pays(emulator, emulator_clock, client, stores, monkeypatch):
    """A claim left mostly to single queries stays batch-sized (other instances can take the rest); once a claim
    was mostly listed, the next ones are list-sized."""
    store = stores[0]
    limits: list[int] = []
    claim = store.claim_due

    def spy(owner, now, lease, limit, *a, **kw):
        limits.append(limit)
        return claim(owner, now, lease, limit, *a, **kw)

    monkeypatch.setattr(store, "claim_due", spy)
    ids = [emulator.create_job(TEST_BUCKET, name=f"j{i}", state="Running",
                               created_at=TEST_START - timedelta(seconds=i)) for i in range(30)]
    for n, jid in enumerate(ids):  # tracked one after the other, as discovery does
        store.track([JobKey(TEST_REGION, TEST_BUCKET, jid)], emulator_clock.now() - timedelta(seconds=60 - n))
    engine = _engine(store, client, emulator_clock, batch_size=5, list_batch_size=100)
    assert engine.tick().polled == 30  # first sight: nothing to list
    assert set(limits) == {5}
    limits.clear()
    emulator_clock.advance(10)
    res = engine.tick()
    assert res.polled == 30 and res.listed == 30
    assert limits[0] == 5 and set(limits[1:]) == {100}
    engine.close()


def test_a_tick_does_not_sweep_its_own_records_for_cycles_hundreds_of_times(emulator, emulator_clock, client,
                                                                           stores):
    """A tick holds thousands of short-lived records that form no reference cycles. Python's default collector
    runs a generation-0 pass every 700 net allocations and older passes over every record held: 240 passes in a
    10,000-job bulk tick, 0.1-0.2 s of it. A tick raises the threshold while it runs and puts it back after."""
    import gc

    store = stores[0]
    ids = emulator.preload(TEST_BUCKET, 1500)
    store.track([JobKey(TEST_REGION, TEST_BUCKET, i) for i in ids], emulator_clock.now())
    engine = _engine(store, client, emulator_clock, rule=RefreshRule())
    before = gc.get_threshold()
    passes: list[int] = []

    def count(phase, info):
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(count)
    try:
        res = engine.tick()
    finally:
        gc.callbacks.remove(count)
    assert res.polled == 1500 and res.errors == 0
    assert len(passes) <= 3, f"{len(passes)} collections during the tick"
    assert gc.get_threshold() == before
