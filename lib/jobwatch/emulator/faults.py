"""Injected faults: which rule fires on a request, decided reproducibly from the seed.

Each rule has its own random stream seeded from ``(seed, index, kind)``, so adding a rule does not reshuffle the
others, and the same seed with the same request sequence fires the same faults. Delays are real time (they
emulate the network) but capped, and interruptible so that ``stop()`` never waits for them. The QPS limit is a
token bucket on an injectable monotonic clock, so a test can exhaust it without sleeping.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from jobwatch.core.errors import ValidationError

# Faults that answer instead of the API (first one wins), and faults that alter the API's own answer.
ACTIONS = frozenset({"status", "qps", "reset", "hang"})
MODIFIERS = frozenset({"truncate", "not_xml", "content_type", "stale", "wrong_job", "nonexist"})
KINDS = frozenset({"latency"}) | ACTIONS | MODIFIERS
DISTRIBUTIONS = ("fixed", "uniform", "exponential")

DEFAULT_CODES = {500: "InternalError", 502: "BadGateway", 503: "SlowDown", 429: "SlowDown", 504: "GatewayTimeout"}


@dataclass(frozen=True)
class FaultRule:
    """One fault. ``path`` is a glob on the decoded path (``/inventorytriggerjob/*`` = query and cancel).

    kind: ``latency`` (``latency`` seconds: the fixed delay, or the mean of ``uniform`` on [0, 2*mean] or of
    ``exponential``; capped at ``max_latency``), ``status`` (``status`` with ``code``, e.g. 503 SlowDown, 500, 502,
    429), ``qps`` (more than ``qps`` requests/s on matching paths answer 503 SlowDown), ``reset`` (socket closed
    with SO_LINGER 0: the client sees a connection reset), ``hang`` (no answer until the client gives up, at most
    ``max_hold`` seconds, then the connection is closed), ``truncate`` (half the announced body, then close),
    ``not_xml`` (an HTML page where XML is due), ``content_type`` (the right body as ``text/html``), ``stale``
    (a query shows the job's previous state if it changed less than ``window`` clock-seconds ago), ``wrong_job`` (a
    query is answered with another job of the bucket, the one created just before), ``nonexist`` (a query answers
    ``NonExistJobIds`` for a job created or changed less than ``window`` clock-seconds ago: a replica that has not
    seen it yet).
    ``times`` limits how often the rule fires (``None``: no limit).
    """

    kind: str
    path: str = "*"
    method: str = "*"
    probability: float = 1.0
    status: int = 503
    code: str | None = None
    message: str | None = None
    latency: float = 0.0
    distribution: str = "fixed"
    max_latency: float = 10.0
    qps: float = 10.0
    max_hold: float = 30.0
    window: float = 10.0
    content_type: str = "text/html; charset=utf-8"
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError("kind", self.kind, "expected one of " + ", ".join(sorted(KINDS)))
        if not 0 <= self.probability <= 1:
            raise ValidationError("probability", self.probability, "expected a probability in [0, 1]")
        if self.distribution not in DISTRIBUTIONS:
            raise ValidationError("distribution", self.distribution, "expected one of " + ", ".join(DISTRIBUTIONS))
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValidationError("status", self.status, "expected an HTTP error status (400-599)")
        if self.kind == "qps" and not self.qps > 0:
            raise ValidationError("qps", self.qps, "expected requests per second > 0")
        for name in ("latency", "max_latency", "max_hold", "window"):
            if getattr(self, name) < 0:
                raise ValidationError(name, getattr(self, name), "expected seconds >= 0")

    @property
    def error_code(self) -> str:
        if self.code:
            return self.code
        if self.kind == "qps":
            return "SlowDown"
        return DEFAULT_CODES.get(self.status, "InternalError")

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method) and fnmatch.fnmatchcase(path, self.path)


@dataclass
class Plan:
    """What the faults do to one request."""

    delay: float = 0.0
    action: FaultRule | None = None
    modifiers: dict[str, FaultRule] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        return ",".join(self.fired) or None

    def spared(self, kind: str) -> None:
        """An answer modifier that fired but left the answer true (nothing changed within its window, no other
        job to mix up): it is not logged as a fault, so the log tells exactly which answers were wrong."""
        if kind in self.fired:
            self.fired.remove(kind)


class _RuleState:
    def __init__(self, rule: FaultRule, rng: random.Random, now: float) -> None:
        self.rule = rule
        self.rng = rng
        self.fired = 0
        self.tokens = max(1.0, rule.qps)
        self.last = now


class FaultEngine:
    def __init__(self, rules: Iterable[FaultRule], seed: int, monotonic: Callable[[], float]) -> None:
        self._seed = seed
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._states: list[_RuleState] = []
        self.set_rules(rules)

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        rules = list(rules)
        for r in rules:
            if not isinstance(r, FaultRule):
                raise ValidationError("faults", r, "expected FaultRule instances")
        now = self._monotonic()
        with self._lock:
            self._states = [_RuleState(r, random.Random(f"{self._seed}:{i}:{r.kind}"), now)
                            for i, r in enumerate(rules)]

    @property
    def rules(self) -> list[FaultRule]:
        return [s.rule for s in self._states]

    def plan(self, method: str, path: str) -> Plan:
        plan = Plan()
        with self._lock:
            for st in self._states:
                r = st.rule
                if not r.matches(method, path) or (r.times is not None and st.fired >= r.times):
                    continue
                if r.kind == "qps":
                    now = self._monotonic()
                    st.tokens = min(max(1.0, r.qps), st.tokens + (now - st.last) * r.qps)
                    st.last = now
                    if st.tokens >= 1.0:
                        st.tokens -= 1.0
                        continue
                elif st.rng.random() >= r.probability:
                    continue
                st.fired += 1
                plan.fired.append(r.kind)
                if r.kind == "latency":
                    plan.delay += self._delay(r, st.rng)
                elif r.kind in ACTIONS:
                    plan.action = r
                    break
                else:
                    plan.modifiers[r.kind] = r
        return plan

    @staticmethod
    def _delay(r: FaultRule, rng: random.Random) -> float:
        if r.distribution == "uniform":
            d = rng.uniform(0.0, 2 * r.latency)
        elif r.distribution == "exponential":
            d = rng.expovariate(1.0 / r.latency) if r.latency > 0 else 0.0
        else:
            d = r.latency
        return min(d, r.max_latency)
