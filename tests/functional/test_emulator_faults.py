"""Every fault kind, observed from a raw ``requests`` client, and reproducible by seed."""

from __future__ import annotations

import time

import pytest
import requests

from fixtures.emulator import TEST_BUCKET, TEST_SECRET_ID, TEST_SECRET_KEY, signed_headers
from jobwatch.emulator import EmulatorServer, FaultRule
from jobwatch.emulator.faults import FaultEngine
from jobwatch.core.errors import BadResponseError
from jobwatch.ci.xmlparse import parse_document, parse_error, parse_response


def get_job(emulator, job_id="bnothing", timeout=5.0, session=None):
    path = f"/inventorytriggerjob/{job_id}"
    return (session or requests).get(emulator.url + path, headers=signed_headers("GET", path), timeout=timeout)


@pytest.mark.parametrize("status,code", [(500, "InternalError"), (502, "BadGateway"), (503, "SlowDown"),
                                         (429, "SlowDown")])
def test_status_faults(emulator, status, code):
    emulator.set_faults([FaultRule(kind="status", status=status, path="/inventorytriggerjob/*")])
    r = get_job(emulator)
    assert r.status_code == status and parse_error(r.content, status=status).code == code
    assert r.headers["x-ci-request-id"] and r.headers["x-ci-trace-id"]
    assert emulator.request_log[-1].fault == "status" and emulator.request_log[-1].status == status
    # the glob: the list path is not matched by /inventorytriggerjob/*
    r = requests.get(emulator.url + "/inventorytriggerjob", headers=signed_headers("GET", "/inventorytriggerjob"),
                     timeout=5)
    assert r.status_code == 200


def test_fault_before_signature_check(emulator):
    emulator.set_faults([FaultRule(kind="status", status=503, code="ServiceUnavailable")])
    r = requests.get(emulator.url + "/inventorytriggerjob/b1", timeout=5)  # unsigned
    assert r.status_code == 503 and parse_error(r.content, status=503).code == "ServiceUnavailable"


def test_qps_limit_answers_slowdown_until_tokens_refill():
    now = [100.0]
    with EmulatorServer(credentials={TEST_SECRET_ID: TEST_SECRET_KEY}, monotonic=lambda: now[0],
                        faults=[FaultRule(kind="qps", qps=5)]) as srv:
        with requests.Session() as s:
            codes = [get_job(srv, session=s).status_code for _ in range(8)]
            assert codes == [200] * 5 + [503] * 3
            assert parse_error(get_job(srv, session=s).content, status=503).code == "SlowDown"
            now[0] += 0.4  # two tokens back
            assert [get_job(srv, session=s).status_code for _ in range(3)] == [200, 200, 503]


def test_connection_reset(emulator):
    emulator.set_faults([FaultRule(kind="reset", times=1)])
    with pytest.raises(requests.ConnectionError) as err:
        get_job(emulator)
    assert "ConnectionResetError" in repr(err.value)  # an RST, not a clean close
    assert emulator.request_log[-1].status == 0 and emulator.request_log[-1].fault == "reset"
    assert get_job(emulator).status_code == 200  # times=1: only once


def test_hang_until_client_timeout_and_stop_is_not_blocked(emulator):
    emulator.set_faults([FaultRule(kind="hang", max_hold=20)])
    with pytest.raises(requests.ReadTimeout):
        get_job(emulator, timeout=0.3)
    started = time.monotonic()
    emulator.stop()  # wakes the held answer instead of waiting max_hold
    assert time.monotonic() - started < 5


def test_truncated_body(emulator):
    emulator.create_job(TEST_BUCKET)
    emulator.set_faults([FaultRule(kind="truncate", path="/inventorytriggerjob")])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(emulator.url + "/inventorytriggerjob", headers=signed_headers("GET", "/inventorytriggerjob"),
                     timeout=5)


def test_non_xml_body(emulator):
    emulator.set_faults([FaultRule(kind="not_xml")])
    r = get_job(emulator)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/xml"
    with pytest.raises(BadResponseError):
        parse_response(r.content)


def test_wrong_content_type(emulator):
    emulator.set_faults([FaultRule(kind="content_type")])
    r = get_job(emulator)
    assert r.headers["Content-Type"].startswith("text/html")
    parse_document(r.content)  # the body itself is still the right XML


def test_stale_read_shows_the_previous_state_briefly(emulator, emulator_clock):
    job_id = emulator.create_job(TEST_BUCKET)
    emulator_clock.advance(5)  # Running since just now
    emulator.set_faults([FaultRule(kind="stale", window=10)])
    assert parse_response(get_job(emulator, job_id).content).jobs[0].state_raw == "Submitted"
    emulator_clock.advance(11)  # the transition is older than the window
    assert parse_response(get_job(emulator, job_id).content).jobs[0].state_raw == "Running"
    assert emulator.job_state(TEST_BUCKET, job_id) == "Running"


def test_the_request_log_names_an_answer_fault_only_when_it_changed_the_answer(emulator, emulator_clock):
    """A stale, NonExist or mixed-up answer is logged as such only when it was one: a rule that fired on a job
    with no recent change (stale, nonexist) or with no other job to mix it up with (wrong_job) leaves the true
    answer, and the log says so. Checks of the log (every job answered cleanly at least once) rely on it."""
    job_id = emulator.create_job(TEST_BUCKET)
    emulator_clock.advance(5)  # Running since just now
    for kind, window in (("stale", 10), ("nonexist", 3)):
        emulator.set_faults([FaultRule(kind=kind, window=window)])
        body = parse_response(get_job(emulator, job_id).content)
        assert (body.jobs[0].state_raw if body.jobs else "NonExist") != "Running"
        assert emulator.request_log[-1].fault == kind
    emulator_clock.advance(11)  # the change is older than either window
    for kind in ("stale", "nonexist", "wrong_job"):  # and the bucket holds no other job to mix it up with
        emulator.set_faults([FaultRule(kind=kind, window=10 if kind == "stale" else 3)])
        assert parse_response(get_job(emulator, job_id).content).jobs[0].state_raw == "Running"
        assert emulator.request_log[-1].fault is None, kind
    other = emulator.create_job(TEST_BUCKET)
    emulator.set_faults([FaultRule(kind="wrong_job")])
    assert parse_response(get_job(emulator, job_id).content).jobs[0].job_id == other
    assert emulator.request_log[-1].fault == "wrong_job"


def test_fixed_latency_delays_the_answer(emulator):
    emulator.set_faults([FaultRule(kind="latency", latency=0.05)])
    started = time.monotonic()
    assert get_job(emulator).status_code == 200
    assert time.monotonic() - started >= 0.05
    assert emulator.request_log[-1].fault == "latency"


@pytest.mark.parametrize("dist", ["uniform", "exponential"])
def test_latency_distributions_have_their_mean_and_cap(dist):
    engine = FaultEngine([FaultRule(kind="latency", latency=0.2, distribution=dist, max_latency=1.0)], seed=3,
                         monotonic=time.monotonic)
    delays = [engine.plan("GET", "/inventorytriggerjob/x").delay for _ in range(4000)]
    assert len(set(delays)) > 1000 and max(delays) <= 1.0
    assert 0.17 < sum(delays) / len(delays) < 0.23


def fired(seed: int) -> list[str | None]:
    engine = FaultEngine([FaultRule(kind="status", probability=0.3), FaultRule(kind="stale", probability=0.5)],
                         seed=seed, monotonic=time.monotonic)
    return [engine.plan("GET", "/inventorytriggerjob/x").label for _ in range(200)]


def test_probability_is_reproducible_by_seed():
    a, b, c = fired(1), fired(1), fired(2)
    assert a == b and a != c
    assert 40 < a.count("status") < 80  # about 30 % of 200


def test_probabilistic_faults_over_http_are_reproducible():
    def run(seed: int) -> list[int]:
        with EmulatorServer(credentials={TEST_SECRET_ID: TEST_SECRET_KEY}, seed=seed,
                            faults=[FaultRule(kind="status", status=503, code="SlowDown", probability=0.3,
                                              path="/inventorytriggerjob/*")]) as srv:
            with requests.Session() as s:
                return [get_job(srv, session=s).status_code for _ in range(40)]
    first = run(5)
    assert first == run(5) and 503 in first and 200 in first


def test_bad_rules_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="kind"):
        FaultRule(kind="explode")
    with pytest.raises(ValueError, match="probability"):
        FaultRule(kind="status", probability=1.5)
