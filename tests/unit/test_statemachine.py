"""The pure decision: transitions, confirmations, final states, vanishing, stalls, and poll timing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobwatch.core.errors import CIError
from jobwatch.core.models import Job, JobKey, JobState, NoticeKind
from jobwatch.core.statemachine import Observation, PollPolicy, StallDecision, decide, is_final
from jobwatch.core.records import VANISHED, TrackedJob

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
KEY = JobKey("ap-guangzhou", "examplebucket-1250000000", "j1")
POLICY = PollPolicy(min_seconds=30, max_seconds=900, backoff=2.0, jitter=0.0, error_max_seconds=600,
                    confirmations=2)
MID = lambda: 0.5  # noqa: E731  (no jitter effect)


def job(state: str, **kw) -> Job:
    return Job(job_id="j1", name="demo", type="Workflow", state=JobState.parse(state), state_raw=state, **kw)


def fresh() -> TrackedJob:
    return TrackedJob(key=KEY, first_seen=T0, next_poll_at=T0)


def step(tj: TrackedJob, obs: Observation, at: datetime = T0, **kw):
    return decide(tj, obs, at, POLICY, rand=MID, **kw)


def test_first_sight_is_a_transition_from_none_with_one_notice():
    d = step(fresh(), Observation.seen(job("Running")))
    assert d.after.state == "Running" and d.after.active
    assert [(t.seq, t.from_state, t.to_state) for t in d.transitions] == [(1, None, "Running")]
    assert [(n.from_state, n.to_state, n.idempotency_key) for n in d.notices] == [(None, "Running", f"{KEY}#1:Running")]


def test_first_sight_in_final_state_is_notified_and_stops_polling():
    d = step(fresh(), Observation.seen(job("Success")))
    assert not d.after.active
    assert [n.kind for n in d.notices] == [NoticeKind.TRANSITION]
    assert d.notices[0].to_state == "Success"


@pytest.mark.parametrize("final", ["Success", "Failed", "Cancel"])
def test_forward_moves_are_recorded_at_once_with_stable_keys(final):
    d1 = step(fresh(), Observation.seen(job("Submitted")))
    d2 = step(d1.after, Observation.seen(job("Running")), T0 + timedelta(seconds=30))
    d3 = step(d2.after, Observation.seen(job(final, code="E1", message="boom")), T0 + timedelta(seconds=60))
    assert [t.to_state for t in d2.transitions + d3.transitions] == ["Running", final]
    assert d3.after.active is False and is_final(d3.after.state)
    (n,) = d3.notices
    assert n.idempotency_key == f"{KEY}#3:{final}" and n.from_state == "Running"
    assert d3.transitions[0].code == "E1" and d3.transitions[0].message == "boom"
    # the same decision taken again (a retry after a crash before commit) yields the same key
    again = step(d2.after, Observation.seen(job(final)), T0 + timedelta(seconds=99))
    assert again.notices[0].idempotency_key == n.idempotency_key


def test_unchanged_state_backs_off_to_the_ceiling():
    tj = step(fresh(), Observation.seen(job("Running"))).after
    delays = []
    for i in range(10):
        d = step(tj, Observation.seen(job("Running")))
        delays.append(d.after.poll_interval)
        assert d.transitions == ()
        tj = d.after
    assert delays[:4] == [60, 120, 240, 480] and delays[-1] == 900


def test_stale_read_is_not_a_transition_until_confirmed():
    running = step(fresh(), Observation.seen(job("Running"))).after
    d = step(running, Observation.seen(job("Submitted")))
    assert d.transitions == () and d.after.state == "Running" and d.after.pending_state == "Submitted"
    # the stale read does not repeat: no transition, pending cleared
    d2 = step(d.after, Observation.seen(job("Running")))
    assert d2.transitions == () and d2.after.pending_state is None
    # a real backward move, seen twice, is recorded
    d3 = step(step(d2.after, Observation.seen(job("Submitted"))).after, Observation.seen(job("Submitted")))
    assert [t.to_state for t in d3.transitions] == ["Submitted"]


def test_vanished_needs_confirmation_then_is_final_and_notified():
    """NonExistJobIds must hold for vanish_seconds (60 s: re-checked every 30 s, so three answers in a row), not
    only ``confirmations`` answers: two NonExist answers 10 s apart, each just after a state change (a replica
    not yet updated), made the fault soak record a false Vanished (issue 19)."""
    assert POLICY.confirmations_for(VANISHED) == 3
    running = step(fresh(), Observation.seen(job("Running"))).after
    d1 = step(running, Observation.missing())
    assert d1.transitions == () and d1.after.active
    d2 = step(d1.after, Observation.missing())
    assert d2.transitions == () and d2.after.active and d2.after.pending_count == 2
    seen = step(d2.after, Observation.seen(job("Running")))  # the job is back: the count starts over
    assert seen.after.pending_state is None and seen.after.state == "Running"
    d = seen.after
    for i in range(1, 4):  # re-checked every confirm delay (30 s): unseen for 90 s by the third answer
        last = step(d, Observation.missing(), T0 + timedelta(seconds=30 * i))
        d = last.after
    assert d.state == VANISHED and not d.active
    assert [n.kind for n in last.notices] == [NoticeKind.VANISHED]


def test_forced_polls_close_together_do_not_confirm_a_vanish():
    """Polls forced seconds apart (track, a queue message, POST /jobs each poll at once) used to count as the
    vanish rule's re-checks: three NonExist answers within 2 s recorded Vanished and alerted. The job must also
    have been unseen for vanish_seconds."""
    running = step(fresh(), Observation.seen(job("Running"))).after
    d = running
    for i in range(1, 6):
        d = step(d, Observation.missing(), T0 + timedelta(seconds=0.5 * i)).after
    assert d.state == "Running" and d.active and d.pending_state == VANISHED
    assert d.last_seen == T0  # a NonExist answer is not a sighting
    late = step(d, Observation.missing(), T0 + timedelta(seconds=61))
    assert late.after.state == VANISHED and [n.kind for n in late.notices] == [NoticeKind.VANISHED]


def test_unknown_new_state_is_recorded_and_polling_goes_on():
    running = step(fresh(), Observation.seen(job("Running"))).after
    d = step(running, Observation.seen(job("Archiving")))
    assert d.after.state == "Archiving" and d.after.active
    assert d.after.job.state is JobState.UNKNOWN and d.notices[0].to_state == "Archiving"


def test_pause_and_resume_are_transitions_without_confirmation():
    running = step(fresh(), Observation.seen(job("Running"))).after
    paused = step(running, Observation.seen(job("Pause")))
    resumed = step(paused.after, Observation.seen(job("Running")))
    assert [t.to_state for t in paused.transitions + resumed.transitions] == ["Pause", "Running"]


def test_errors_back_off_separately_and_keep_state():
    running = step(fresh(), Observation.seen(job("Running"))).after
    err = CIError("InternalError", "oops", status=500, retryable=True)
    delays = []
    tj = running
    for _ in range(7):
        d = step(tj, Observation.failed(err))
        delays.append((d.after.next_poll_at - T0).total_seconds())
        tj = d.after
    assert tj.state == "Running" and tj.error_count == 7 and "InternalError" in tj.last_error
    assert delays == [30, 60, 120, 240, 480, 600, 600]
    ok = step(tj, Observation.seen(job("Running")))
    assert ok.after.error_count == 0 and ok.after.last_error is None


def test_error_text_is_scrubbed_of_secrets():
    from jobwatch.core.redact import Secret

    Secret("CANARY-SECRET-KEY-123")
    d = step(fresh(), Observation.failed(RuntimeError("auth with CANARY-SECRET-KEY-123 failed")))
    assert "CANARY-SECRET-KEY-123" not in d.after.last_error


def test_jitter_stays_within_bounds():
    p = PollPolicy(min_seconds=100, max_seconds=100, jitter=0.1)
    assert p.next_delay(0, True, lambda: 0.0) == pytest.approx(90)
    assert p.next_delay(0, True, lambda: 1.0) == pytest.approx(110)


def test_stall_notice_once_then_recovered_when_it_moves():
    calls = []

    def check(tj, now):
        calls.append(now)
        stalled = now - (tj.last_change or tj.first_seen) > timedelta(hours=1)
        notify = stalled and (tj.stall_notified_at is None or now - tj.stall_notified_at > timedelta(hours=6))
        return StallDecision(stalled, notify)

    tj = step(fresh(), Observation.seen(job("Running")), stall_check=check).after
    d1 = step(tj, Observation.seen(job("Running")), T0 + timedelta(hours=2), stall_check=check)
    assert [n.kind for n in d1.notices] == [NoticeKind.STALLED] and d1.after.stalled
    d2 = step(d1.after, Observation.seen(job("Running")), T0 + timedelta(hours=3), stall_check=check)
    assert d2.notices == [] and d2.after.stalled  # not repeated within the interval
    d3 = step(d2.after, Observation.seen(job("Pause")), T0 + timedelta(hours=4), stall_check=check)
    assert [n.kind for n in d3.notices] == [NoticeKind.TRANSITION, NoticeKind.RECOVERED]
    assert not d3.after.stalled


def test_evolve_copies_and_refuses_unknown_fields():
    from datetime import datetime, timezone

    from jobwatch.core.models import JobKey
    from jobwatch.core.records import TrackedJob

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    tj = TrackedJob(JobKey("ap-guangzhou", "b-1250000000", "j1"), t, t, tags={"team": "a"})
    after = tj.evolve(state="Running", polls=3)
    assert (after.state, after.polls, after.tags) == ("Running", 3, {"team": "a"})
    assert (tj.state, tj.polls) == (None, 0)  # the original is untouched
    assert after == tj.evolve(state="Running", polls=3) and after != tj
    with pytest.raises(TypeError, match="no field"):
        tj.evolve(sate="Running")


def test_a_failed_poll_is_recorded_with_its_time_and_a_scrubbed_message():
    running = step(fresh(), Observation.seen(job("Running"))).after
    assert step(running, Observation.seen(job("Running"))).errors == ()  # a good poll records none
    d = step(running, Observation.failed(CIError("InternalError", "oops", status=500, retryable=True)))
    (e,) = d.errors
    assert e.key == running.key and e.at == T0 and e.message == d.after.last_error and "InternalError" in e.message


# -- light records (a bulk refresh's claim): the stub stands for the stored job -----------------------------------

def _light(state: str = "Running") -> TrackedJob:
    """What a light claim returns for a job recorded in ``state``: a stub job, the stored JSON beside it."""
    import json

    full = job(state, created_at=T0)
    stub = Job.stub("j1", "Workflow", state, T0)
    return TrackedJob(key=KEY, first_seen=T0, next_poll_at=T0, state=state, job=stub, last_seen=T0, last_change=T0,
                      transitions=1, job_json=json.dumps(full.to_json()), light=True)


def test_a_job_listed_unchanged_that_stalls_is_notified_with_the_whole_stored_job():
    """A listing that finds the recorded answer again hands the decision the claim's stub; a notice must still
    carry the job as stored (name, input...), never the stub."""
    tj = _light()
    d = step(tj, Observation.seen(tj.job), at=T0 + timedelta(hours=2),
             stall_check=lambda after, now: StallDecision(True, True))
    (n,) = d.notices
    assert n.kind is NoticeKind.STALLED and n.job["name"] == "demo" and n.job == job("Running", created_at=T0).to_json()
    assert d.after.job is tj.job  # the record keeps the stub: the store keeps the stored JSON


def test_a_full_job_replacing_the_stub_makes_the_record_whole_again():
    tj = _light()
    full = job("Success", created_at=T0, code="Success")
    assert tj.evolve(version=3).light  # other changes keep the stub
    assert not tj.evolve(job=full).light
    d = step(tj, Observation.seen(full), at=T0 + timedelta(minutes=5))
    assert not d.after.light and d.notices[0].job == full.to_json()


def test_restore_builds_the_same_record_as_the_constructor_and_needs_every_field():
    from dataclasses import fields

    tj = _light()
    values = {f.name: getattr(tj, f.name) for f in fields(TrackedJob)}
    assert TrackedJob.restore(**values) == tj and TrackedJob.restore(**values).job_json == tj.job_json
    values.pop("tags")
    with pytest.raises(TypeError, match="tags"):
        TrackedJob.restore(**values)


def test_a_stub_job_equals_the_job_built_field_by_field():
    stub = Job.stub("j1", "Job", "Pause", T0)
    assert stub == Job(job_id="j1", name=None, type="Job", state=JobState.PAUSE, state_raw="Pause", created_at=T0)
    assert Job.stub("j1", None, "Brand-new", None).state is JobState.UNKNOWN
