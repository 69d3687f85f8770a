"""Wiring: builds the collaborators from :class:`~jobwatch.config.Settings` once per instance (SCF reuses a warm
instance, so the HTTP pool and the store connection survive between invocations), and offers the operations
the handler and the CLI call. Nothing here parses events or formats output.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

import structlog

from jobwatch.app.config import Settings, store_warning
from jobwatch.app.engine import Engine, TickResult, utcnow
from jobwatch.core.errors import JobwatchError, StoreError
from jobwatch.core.models import Job, JobKey
from jobwatch.app.outbox import DrainResult, Outbox
from jobwatch.core.redact import Secret
from jobwatch.core.retry import Backoff
from jobwatch.core.statemachine import PollPolicy, StallCheck, StallDecision
from jobwatch.store import Store, open_store
from jobwatch.core.records import TrackedJob

log = structlog.get_logger("jobwatch.app.orchestrator")


@dataclass
class RunSummary:
    """What one invocation did; the handler returns it as JSON and logs it as one line."""

    action: str
    tick: TickResult = field(default_factory=TickResult)
    drain: DrainResult = field(default_factory=DrainResult)
    registered: int = 0
    already_tracked: int = 0
    discovered: int = 0
    fanned_out: int = 0
    shards: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        t = self.tick
        return {
            "action": self.action,
            "polled": t.polled,
            "transitions": t.transitions,
            "notices_queued": t.notices,
            "notices_delivered": self.drain.delivered,
            "notices_failed": self.drain.failed,
            "notices_dead": self.drain.dead,
            "errors": t.errors,
            "throttled": t.throttled,
            "error_samples": t.error_samples,
            "registered": self.registered,
            "already_tracked": self.already_tracked,
            "discovered": self.discovered,
            "rejected": self.rejected,
            "left": t.left,
            "fanned_out": self.fanned_out,
            "shards": self.shards,
            "budget_exhausted": t.budget_exhausted or self.drain.budget_exhausted,
            "time_used_s": round(self.elapsed, 3),
        }


class App:
    """One instance's collaborators. Pass any of them in to replace the one built from settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        client: Any | None = None,
        sinks: Sequence[Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        environ: Mapping[str, str] | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.rand = rand
        self.environ = environ
        self._owner = owner
        if store is not None:
            self.__dict__["store"] = store
        if client is not None:
            self.__dict__["client"] = client
        if sinks is not None:
            self.__dict__["sinks"] = list(sinks)

    # -- collaborators, built on first use ---------------------------------------------------------------------
    @cached_property
    def store(self) -> Store:
        url = self.settings.store_url
        text = url.reveal() if isinstance(url, Secret) else url
        warning = store_warning(text, self.environ)
        if warning:
            log.warning("store_not_durable", reason=warning)
        return open_store(text)

    @cached_property
    def credentials(self) -> Any:
        from jobwatch.ci.credentials import provider_from_settings

        s = self.settings
        return provider_from_settings(
            secret_id=s.secret_id, secret_key=s.secret_key, session_token=s.session_token,
            profile_path=s.credentials_profile, role_arn=s.role_arn, role_session_name=s.role_session_name,
            role_duration=s.role_duration, sts_endpoint=s.sts_endpoint, environ=self.environ,
        )

    @cached_property
    def client(self) -> Any:
        from jobwatch.ci.client import CIClient

        s = self.settings
        return CIClient(
            self.credentials, endpoint=s.ci_endpoint, connect_timeout=s.http_connect_timeout,
            read_timeout=s.http_read_timeout, max_attempts=s.http_max_attempts, sign_window=s.sign_window,
            verify=s.verify_tls, pool_size=max(s.http_pool_size, s.concurrency), rand=self.rand,
        )

    @cached_property
    def sinks(self) -> list[Any]:
        from jobwatch.notify import parse_sinks

        spec = self.settings.notify
        text = spec.reveal() if isinstance(spec, Secret) else (spec or "")
        return list(parse_sinks(text or "log://", credentials=lambda: self.credentials.get()))

    @cached_property
    def stall_check(self) -> StallCheck | None:
        s = self.settings
        from jobwatch.core.stall import StallRules, evaluate_stall

        rules = StallRules.parse(s.stall_rules or None, running=s.stall_running_seconds,
                                 paused=s.stall_paused_seconds, repeat=s.stall_repeat_seconds)

        def check(tj: TrackedJob, now: datetime) -> StallDecision | None:
            since = tj.last_change or tj.first_seen
            d = evaluate_stall(tj.state or "", since, now, tj.stall_notified_at, tj.key.bucket, tj.tags, rules)
            return StallDecision(bool(d.stalled), bool(d.notify))

        return check

    @cached_property
    def engine(self) -> Engine:
        s = self.settings
        policy = PollPolicy(
            min_seconds=s.poll_min_seconds, max_seconds=s.poll_max_seconds, backoff=s.poll_backoff,
            jitter=s.poll_jitter, error_max_seconds=s.error_backoff_max_seconds, confirmations=s.confirmations,
        )
        return Engine(
            self.store, self.client, policy=policy, owner=self._owner, concurrency=s.concurrency,
            lease_seconds=s.lease_seconds, batch_size=s.batch_size, safety_margin=s.safety_margin_seconds,
            clock=self.clock, monotonic=self.monotonic, rand=self.rand, stall_check=self.stall_check,
        )

    @cached_property
    def outbox(self) -> Outbox:
        s = self.settings
        return Outbox(
            self.store, self.sinks, owner=self.engine.owner, max_attempts=s.notify_max_attempts,
            backoff=Backoff(base=s.notify_backoff_base, cap=s.notify_backoff_cap, max_attempts=s.notify_max_attempts),
            timeout=s.notify_timeout, clock=self.clock, monotonic=self.monotonic, rand=self.rand,
        )

    def close(self) -> None:
        for name in ("engine", "client", "store"):
            obj = self.__dict__.get(name)
            if obj is not None and hasattr(obj, "close"):
                obj.close()

    # -- operations ----------------------------------------------------------------------------------------------
    def deadline_from(self, budget_seconds: float | None) -> float | None:
        return None if budget_seconds is None else self.monotonic() + budget_seconds

    def tick(self, deadline: float | None = None, *, discover: bool = True, deliver: bool = True,
             keys: Sequence[JobKey] | None = None, action: str = "poll") -> RunSummary:
        """One timer tick: discovery (when configured), poll due jobs, deliver the outbox."""
        start = self.monotonic()
        summary = RunSummary(action)
        if discover and keys is None:
            for region, bucket in self.settings.discovery or ():
                spec = f"{region}/{bucket}"
                try:
                    summary.discovered += self.engine.discover(region, bucket, deadline)
                except StoreError:
                    raise  # the store is down: fail the invocation so the trigger retries it
                except JobwatchError as exc:  # one bucket's listing failed; the rest of the tick goes on
                    summary.rejected.append({"discovery": spec, "error": str(exc)})
                    log.warning("discovery_failed", target=spec, error=str(exc))
        summary.tick = self.engine.tick(deadline, keys=keys)
        if deliver:
            summary.drain = self.outbox.drain(deadline)
        summary.elapsed = self.monotonic() - start
        return summary

    def register(self, keys: Sequence[JobKey], *, tags: dict[str, str] | None = None, poll: bool = True,
                 deadline: float | None = None, action: str = "track") -> RunSummary:
        """Start watching ``keys`` (idempotent) and, by default, poll them at once."""
        start = self.monotonic()
        summary = RunSummary(action)
        new = self.engine.track(list(keys), tags)
        summary.registered = sum(new)
        summary.already_tracked = len(new) - summary.registered
        if poll and keys:
            summary.tick = self.engine.tick(deadline, keys=list(dict.fromkeys(keys)))
            summary.drain = self.outbox.drain(deadline)
        summary.elapsed = self.monotonic() - start
        return summary

    def untrack(self, keys: Sequence[JobKey]) -> int:
        return self.store.untrack(keys)

    def job_status(self, key: JobKey) -> TrackedJob | None:
        return self.store.get(key)

    def purge(self, older_than_days: float | None = None,
              progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
        days = self.settings.retention_days if older_than_days is None else older_than_days
        return self.store.purge(self.clock() - timedelta(days=days), progress=progress)


__all__ = ["App", "RunSummary", "Job"]
