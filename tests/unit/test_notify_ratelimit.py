"""The token bucket never waits: it answers how long until a token, on an injected clock."""

import pytest

from jobwatch.core.errors import ValidationError
from jobwatch.notify.ratelimit import Rate, TokenBucket


@pytest.mark.parametrize("text,count,per", [("20/min", 20, 60), ("1/s", 1, 1), ("1000/s", 1000, 1),
                                            ("2.5/h", 2.5, 3600), (" 3 / second ", 3, 1)])
def test_parse(text, count, per):
    r = Rate.parse(text)
    assert (r.count, r.per) == (count, per)


@pytest.mark.parametrize("text", ["", "20", "0/s", "-1/s", "5/day", "x/min", "1/"])
def test_parse_refuses(text):
    with pytest.raises(ValidationError, match="rate"):
        Rate.parse(text)


def test_burst_then_refill():
    now = [0.0]
    b = TokenBucket(Rate.parse("20/min"), clock=lambda: now[0])
    assert [b.try_acquire() for _ in range(20)] == [None] * 20
    assert b.try_acquire() == pytest.approx(3.0)
    now[0] = 1.5
    assert b.try_acquire() == pytest.approx(1.5)
    now[0] = 3.0
    assert b.try_acquire() is None
    assert b.try_acquire() == pytest.approx(3.0)
    now[0] = 1000.0  # refill caps at the capacity
    assert sum(b.try_acquire() is None for _ in range(25)) == 20


def test_one_per_second():
    now = [5.0]
    b = TokenBucket(Rate.parse("1/s"), clock=lambda: now[0])
    assert b.try_acquire() is None
    assert b.try_acquire() == pytest.approx(1.0)
    now[0] += 0.25
    assert b.try_acquire() == pytest.approx(0.75)


def test_clock_going_backwards_does_not_mint_tokens():
    now = [10.0]
    b = TokenBucket(Rate.parse("1/s"), clock=lambda: now[0])
    assert b.try_acquire() is None
    now[0] = 5.0
    assert b.try_acquire() is not None
