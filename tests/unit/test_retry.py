"""What is retried, as a table; the backoff's bounds; Retry-After parsing."""

from __future__ import annotations

import pytest

from jobwatch.core.retry import Backoff, is_retryable_error, is_throttling, parse_retry_after, should_retry

# status, code, retried for an idempotent call, retried for a create (not idempotent)
ANSWERS = [
    (503, "SlowDown", True, True),
    (429, "Unknown", True, True),          # a bare 429 is throttling on purpose
    (503, "Unknown", True, False),         # a bare 503: retried, but a create may have happened
    (500, "InternalError", True, False),
    (502, "BadGateway", True, False),
    (504, "Unknown", True, False),
    (403, "RequestTimeTooSkewed", True, True),
    (403, "AccessDenied", False, False),
    (403, "SignatureDoesNotMatch", False, False),
    (403, "InvalidAccessKeyId", False, False),
    (400, "InvalidArgument", False, False),
    (400, "InvalidInput", False, False),
    (404, "NoSuchBucket", False, False),
    (404, "NoSuchJob", False, False),
    (400, "Unknown", False, False),
    (404, "Unknown", False, False),
    (500, "AccessDenied", False, False),   # a permanent code wins over a 5xx status
    (503, "RequestLimitExceeded", True, True),
]


@pytest.mark.parametrize("status,code,idem,create", ANSWERS)
def test_answer_table(status, code, idem, create):
    assert should_retry(status=status, code=code, idempotent=True) is idem
    assert should_retry(status=status, code=code, idempotent=False) is create


@pytest.mark.parametrize("sent,idempotent,expected", [
    (True, True, True), (False, True, True), (False, False, True), (True, False, False),
])
def test_transport_failures(sent, idempotent, expected):
    assert should_retry(transport=True, sent=sent, idempotent=idempotent) is expected


def test_throttling_classification():
    assert is_throttling(429, "Unknown") and is_throttling(503, "SlowDown")
    assert not is_throttling(503, "ServiceUnavailable")
    assert is_retryable_error(503, "ServiceUnavailable")


def test_backoff_full_jitter_bounds():
    b = Backoff(base=0.5, cap=4.0)
    assert b.delay(0, rand=lambda: 0.0) == 0.0
    assert b.delay(0, rand=lambda: 0.999) == pytest.approx(0.4995)
    assert b.delay(2, rand=lambda: 1.0) == 2.0
    assert b.delay(10, rand=lambda: 1.0) == 4.0  # capped


def test_backoff_honours_a_larger_server_hint_up_to_the_cap():
    b = Backoff(base=0.1, cap=5.0)
    assert b.delay(0, rand=lambda: 0.5, retry_after=3) == 3
    assert b.delay(0, rand=lambda: 0.5, retry_after=60) == 5.0
    assert b.delay(5, rand=lambda: 1.0, retry_after=0.01) == 3.2


@pytest.mark.parametrize("value,now,expected", [
    ("2", 0, 2.0), ("0.5", 0, 0.5), (" 7 ", 0, 7.0), ("-3", 0, 0.0), (None, 0, None), ("", 0, None),
    ("soon", 0, None), ("nan", 0, None), ("inf", 0, None),
    ("Thu, 16 May 2019 06:45:51 GMT", 1557989141.0, 10.0),
    ("Thu, 16 May 2019 06:45:51 GMT", 1557989200.0, 0.0),
])
def test_parse_retry_after(value, now, expected):
    got = parse_retry_after(value, now)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_adaptive_limit_halves_on_throttling_once_per_cooldown_and_grows_back():
    from jobwatch.core.retry import AdaptiveLimit

    now = [0.0]
    lim = AdaptiveLimit(32, cooldown=1.0, monotonic=lambda: now[0])
    assert lim.allowed == 32
    assert lim.throttled() is True and lim.allowed == 16
    assert lim.throttled() is False and lim.allowed == 16  # the requests already in flight say nothing new
    now[0] = 1.0
    assert lim.throttled() is True and lim.allowed == 8
    for _ in range(8):  # one round of successes at 8 in flight: about one more
        lim.succeeded()
    assert lim.allowed == 8 or lim.allowed == 9
    for _ in range(2000):
        lim.succeeded()
    assert lim.allowed == 32  # never above the ceiling
    for i in range(20):
        now[0] = 10.0 + 2 * i
        lim.throttled()
    assert lim.allowed == 1  # never below the floor


def test_adaptive_limit_refuses_a_floor_above_the_ceiling():
    from jobwatch.core.retry import AdaptiveLimit

    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(4, floor=5)


def test_an_answer_counts_into_the_limit_by_what_it_was():
    """Every caller (per-job polls, listing windows, children pages) counts its answers the same way: a success
    grows the limit, a throttling refusal cuts it (once per cooldown), any other failure leaves it."""
    from jobwatch.core.errors import CIError, TransportError
    from jobwatch.core.retry import AdaptiveLimit, throttled_by

    now = [0.0]
    lim = AdaptiveLimit(32, cooldown=1.0, monotonic=lambda: now[0])
    slow = CIError("SlowDown", "slow down", status=503)
    busy = CIError("Unknown", "rate", status=429)
    other = CIError("NoSuchBucket", "no such bucket", status=404)
    assert throttled_by(slow) and throttled_by(busy)
    assert not throttled_by(other) and not throttled_by(TransportError("reset")) and not throttled_by(None)
    assert lim.answered(other) is False and lim.allowed == 32
    assert lim.answered(slow) is True and lim.allowed == 16  # cut: the caller logs it once
    assert lim.answered(busy) is False and lim.allowed == 16  # within the cooldown: counted, not cut again
    lim.answered(None)
    assert lim.allowed == 16 and lim._value > 16  # a success grows it back a little
