"""Sink outage: the webhook endpoint refuses connections, then answers 503, then comes back. Meanwhile notices
wait in the outbox (pending, attempts growing, next attempt backing off), none is dropped or marked dead; after it
returns every notice arrives, exactly once. Outbox.drain runs on an injected clock: no real waiting."""

from __future__ import annotations

from rel_support import BUCKET, REGION, SECRET_ID, SECRET_KEY, START, WebhookReceiver, start_emulator

from jobwatch.ci.client import CIClient
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import ManualClock
from jobwatch.app.engine import Engine
from jobwatch.core.models import JobKey
from jobwatch.notify import parse_sinks
from jobwatch.app.outbox import Outbox
from jobwatch.core.retry import Backoff
from jobwatch.core.statemachine import PollPolicy
from jobwatch.store import open_store


def test_notices_wait_while_the_sink_is_down_and_all_arrive_after(sqlite_url):
    clock = ManualClock(start=START)
    emulator = start_emulator(clock, seed=40)
    receiver = WebhookReceiver().start()
    port = receiver.port
    spec = receiver.spec()
    receiver.stop()  # phase 1: nothing listens on the port (connection refused)
    store = open_store(sqlite_url)
    client = CIClient(StaticProvider(SECRET_ID, SECRET_KEY), endpoint=emulator.url, max_attempts=1)
    engine = Engine(store, client, policy=PollPolicy(min_seconds=10, max_seconds=20, jitter=0.0), clock=clock.now,
                    rand=lambda: 0.5)
    outbox = Outbox(store, parse_sinks(spec), clock=clock.now, timeout=1.0, rand=lambda: 1.0,
                    backoff=Backoff(base=10.0, cap=120.0), max_attempts=30)
    try:
        keys = [JobKey(REGION, BUCKET, emulator.create_job(BUCKET, name=f"k{i}")) for i in range(10)]
        store.track(keys, clock.now())
        attempts_seen: list[int] = []
        for step in range(30):  # 300 emulated seconds down: every job finishes meanwhile
            if step == 15:
                receiver = WebhookReceiver(status=503).start(port)  # phase 2: up, but answering 503
            engine.tick()
            outbox.drain()
            pending = store.list_outbox(status="pending", limit=1000)
            attempts_seen.append(max((e.attempts for e in pending), default=0))
            clock.advance(10)
        assert not store.list_jobs(active=True)
        total = len(store.list_outbox(limit=1000))
        pending = store.list_outbox(status="pending", limit=1000)
        assert total >= 20 and len(pending) == total, store.counts()  # none dropped, none dead, none done
        assert min(e.attempts for e in pending) >= 2 and attempts_seen == sorted(attempts_seen)
        assert all(e.next_attempt_at > clock.now() or e.attempts >= 2 for e in pending)
        assert receiver.received == []
        receiver.status = 204  # phase 3: back
        for _ in range(20):
            outbox.drain()
            if not store.list_outbox(status="pending", limit=1):
                break
            clock.advance(30)
        assert store.counts().get("outbox.done") == total, store.counts()
        assert sorted(receiver.ids()) == sorted(e.notice.idempotency_key for e in store.list_outbox(limit=1000))
    finally:
        engine.close()
        client.close()
        store.close()
        receiver.stop()
        emulator.stop()
