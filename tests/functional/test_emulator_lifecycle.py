"""Lifecycle on the injected clock: states move only when the clock does, fates are seeded and reproducible."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests
from freezegun import freeze_time

from fixtures.emulator import TEST_BUCKET, TEST_SECRET_ID, TEST_SECRET_KEY, signed_headers
from jobwatch.emulator import EmulatorServer, Lifecycle, ManualClock, SpeedClock, SystemClock
from jobwatch.ci.xmlparse import parse_response


def query(emulator, job_id):
    path = f"/inventorytriggerjob/{job_id}"
    r = requests.get(emulator.url + path, headers=signed_headers("GET", path), timeout=5)
    assert r.status_code == 200
    return parse_response(r.content)


def test_submitted_running_success_follows_the_clock(emulator, emulator_clock):
    job_id = emulator.create_job(TEST_BUCKET)
    job = query(emulator, job_id).jobs[0]
    assert job.state_raw == "Submitted" and job.started_at is None and job.ended_at is None
    emulator_clock.advance(4.9)
    assert query(emulator, job_id).jobs[0].state_raw == "Submitted"
    emulator_clock.advance(0.1)
    job = query(emulator, job_id).jobs[0]
    assert job.state_raw == "Running"
    assert job.started_at == datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc)
    emulator_clock.advance(3600)  # one big jump: the end is stamped when it was due, not when observed
    job = query(emulator, job_id).jobs[0]
    assert job.state_raw == "Success" and job.code == "Success"
    assert job.ended_at == datetime(2026, 1, 1, 0, 1, 5, tzinfo=timezone.utc)


def test_failure_ratio_one_fails_every_job_with_a_reason():
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    with EmulatorServer(credentials={TEST_SECRET_ID: TEST_SECRET_KEY}, clock=clock,
                        lifecycle=Lifecycle(submitted_seconds=1, running_seconds=1, failure_ratio=1.0)) as srv:
        ids = [srv.create_job(TEST_BUCKET) for _ in range(5)]
        clock.advance(2)
        jobs = [query(srv, i).jobs[0] for i in ids]
    assert {j.state_raw for j in jobs} == {"Failed"}
    assert all(j.code and j.code != "Success" and j.message for j in jobs)


def test_pause_keeps_progress_and_resume_continues(emulator, emulator_clock):
    job_id = emulator.create_job(TEST_BUCKET)
    emulator_clock.advance(5 + 50)  # Running for 50 of its 60 s
    emulator.pause(TEST_BUCKET, job_id)
    emulator_clock.advance(1000)
    assert query(emulator, job_id).jobs[0].state_raw == "Pause"
    emulator.resume(TEST_BUCKET, job_id)
    emulator_clock.advance(9)
    assert emulator.job_state(TEST_BUCKET, job_id) == "Running"
    emulator_clock.advance(1)
    assert emulator.job_state(TEST_BUCKET, job_id) == "Success"


def test_cancel_over_http_and_cancel_of_an_ended_job(emulator, emulator_clock):
    job_id = emulator.create_job(TEST_BUCKET)
    path = f"/inventorytriggerjob/{job_id}"
    r = requests.put(emulator.url + path + "?cancel", headers=signed_headers("PUT", path), timeout=5)
    assert r.status_code == 200 and r.content == b"" and r.headers["x-ci-request-id"]
    job = query(emulator, job_id).jobs[0]
    assert job.state_raw == "Cancel" and job.ended_at is not None
    emulator_clock.advance(3600)
    assert emulator.job_state(TEST_BUCKET, job_id) == "Cancel"  # no natural progress after a cancel
    done = emulator.create_job(TEST_BUCKET, state="Success")
    dpath = f"/inventorytriggerjob/{done}"
    r = requests.put(emulator.url + dpath + "?cancel", headers=signed_headers("PUT", dpath), timeout=5)
    assert r.status_code == 200 and emulator.job_state(TEST_BUCKET, done) == "Success"


def test_deleted_job_vanishes(emulator):
    job_id = emulator.create_job(TEST_BUCKET, state="Running")
    emulator.delete_job(TEST_BUCKET, job_id)
    res = query(emulator, job_id)
    assert res.jobs == [] and res.non_exist_ids == [job_id]


def test_set_state_backdoor_and_preload_spread(emulator):
    job_id = emulator.create_job(TEST_BUCKET, type="Job", state="Running")
    emulator.set_state(TEST_BUCKET, job_id, "Failed")
    assert query(emulator, job_id).jobs[0].state_raw == "Failed"
    ids = emulator.preload(TEST_BUCKET, 12)
    states = [emulator.job_state(TEST_BUCKET, i) for i in ids]
    assert set(states) == {"Submitted", "Running", "Success", "Failed", "Pause", "Cancel"}
    assert {emulator.job_view(TEST_BUCKET, i).type for i in ids} == {"Workflow", "Job"}


def story(seed, jitter=0.3):
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    srv = EmulatorServer(credentials={}, clock=clock, seed=seed,
                         lifecycle=Lifecycle(submitted_seconds=10, running_seconds=100, failure_ratio=0.5,
                                             jitter=jitter))
    ids = [srv.create_job(TEST_BUCKET) for _ in range(20)]
    timeline = []
    for _ in range(12):
        clock.advance(10)
        timeline.append(tuple(srv.job_state(TEST_BUCKET, i) for i in ids))
    return ids, timeline


def test_same_seed_same_story_other_seed_other_story():
    ids1, t1 = story(7)
    ids2, t2 = story(7)
    ids3, t3 = story(8)
    assert ids1 == ids2 and t1 == t2
    assert ids1 != ids3 and t1 != t3
    assert {"Success", "Failed"} <= set(t1[-1])
    # with jitter, jobs created together do not all start at once; without it they do
    def starts(timeline):
        return {next(i for i, s in enumerate(col) if s != "Submitted") for col in zip(*timeline)}
    assert len(starts(t1)) > 1
    assert len(starts(story(7, jitter=0.0)[1])) == 1


def test_job_ids_depend_on_seed_and_creation_order_only(emulator):
    first = emulator.create_job(TEST_BUCKET)
    for _ in range(3):
        query(emulator, first)  # requests in between draw request IDs, not job IDs
    second = emulator.create_job(TEST_BUCKET)
    quiet = EmulatorServer(credentials={}, seed=1)
    assert [quiet.create_job(TEST_BUCKET), quiet.create_job(TEST_BUCKET)] == [first, second]


def test_system_clock_follows_freezegun():
    with freeze_time("2026-03-01 00:00:00") as frozen:
        srv = EmulatorServer(credentials={}, clock=SystemClock(),
                             lifecycle=Lifecycle(submitted_seconds=5, running_seconds=60, failure_ratio=0))
        job_id = srv.create_job(TEST_BUCKET)
        assert srv.job_view(TEST_BUCKET, job_id).created_at == datetime(2026, 3, 1, tzinfo=timezone.utc)
        frozen.tick(timedelta(seconds=6))
        assert srv.job_state(TEST_BUCKET, job_id) == "Running"
        frozen.tick(timedelta(seconds=60))
        assert srv.job_state(TEST_BUCKET, job_id) == "Success"


def test_speed_clock_runs_factor_times_faster():
    base = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    fast = SpeedClock(60, base=base)
    base.advance(2)
    assert fast.now() - datetime(2026, 1, 1, tzinfo=timezone.utc) == timedelta(seconds=120)
