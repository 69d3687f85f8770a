"""A poller process for the reliability suites: the real Engine (and optionally the real Outbox with a webhook
sink) over a shared store and the emulator, ticking on a clock shared with the test process until every job is
final (and every notice delivered) or its time runs out.

Usage: ``python poller.py '<json config>'`` (see ``DEFAULTS``). It prints one JSON summary line on exit.

Crash points (``kill``): the process SIGKILLs itself at a chosen place, so a test can aim a crash at
- ``poll``: right after the n-th answer from the service, before its decision is written;
- ``tx``: inside ``record_polls``, before the n-th SQL statement of the write transaction (earlier statements of
  the same transaction have run and are not committed);
- ``delivery``: before recording the n-th delivery (the receiver has the notice, the store does not know).
The test process can also SIGKILL it from outside at a random moment.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from rel_support import SharedClock

DEFAULTS: dict[str, Any] = {
    "store_url": None, "endpoint": None, "clock": None, "owner": None, "secret_id": None, "secret_key": None,
    "policy": {"min_seconds": 10, "max_seconds": 20, "backoff": 1.5, "jitter": 0.0, "confirmations": 2},
    "lease_seconds": 60.0, "concurrency": 8, "batch_size": 50, "read_timeout": 2.0, "max_attempts": 1,
    "sinks": None, "outbox_lease_seconds": 20.0, "run_seconds": 60.0, "idle_sleep": 0.05,
    "kill": None,  # {"mode": "poll"|"tx"|"delivery", "n": int}
    "poll_log": None,  # a JSONL file: one line per query (owner, job, emulated start and end)
}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    cfg = {**DEFAULTS, **json.loads(argv[1])}
    from jobwatch.ci.client import CIClient
    from jobwatch.ci.credentials import StaticProvider
    from jobwatch.app.engine import Engine
    from jobwatch.app.outbox import Outbox
    from jobwatch.core.retry import Backoff
    from jobwatch.core.statemachine import PollPolicy
    from jobwatch.store import open_store

    clock = SharedClock.from_spec(cfg["clock"])
    store = open_store(cfg["store_url"])
    client = CIClient(StaticProvider(cfg["secret_id"], cfg["secret_key"]), endpoint=cfg["endpoint"],
                      read_timeout=cfg["read_timeout"], max_attempts=cfg["max_attempts"], sleep=lambda s: None)
    kill = cfg["kill"] or {}
    mode, n_kill = kill.get("mode"), int(kill.get("n", 0))
    counter = {"n": 0}
    lock = threading.Lock()
    polls: list[dict[str, Any]] = []
    owner = cfg["owner"]

    real_get = client.get_job

    def get_job(bucket: str, region: str, job_id: str) -> Any:
        t0 = clock.now().timestamp()
        res = real_get(bucket, region, job_id)
        with lock:
            polls.append({"owner": owner, "job": job_id, "t0": t0, "t1": clock.now().timestamp()})
            if mode == "poll":
                counter["n"] += 1
                if counter["n"] >= n_kill:
                    _die()
        return res

    client.get_job = get_job  # type: ignore[method-assign]

    if mode == "tx":
        real_exec, real_exec_many, real_record = store._exec, store._exec_many, store.record_polls
        inside = {"on": False}

        def _maybe_die() -> None:
            if inside["on"]:
                counter["n"] += 1
                if counter["n"] >= n_kill:
                    _die()

        def _exec(cur: Any, sql: str, params: Any = ()) -> Any:
            _maybe_die()
            return real_exec(cur, sql, params)

        def _exec_many(cur: Any, sql: str, rows: Any) -> Any:  # a batch writes one statement per table
            _maybe_die()
            return real_exec_many(cur, sql, rows)

        def record_polls(o: str, records: Any) -> Any:
            inside["on"] = True
            try:
                return real_record(o, records)
            finally:
                inside["on"] = False

        store._exec = _exec  # type: ignore[method-assign]
        store._exec_many = _exec_many  # type: ignore[method-assign]
        store.record_polls = record_polls  # type: ignore[method-assign]
    if mode == "delivery":
        real_delivery = store.record_delivery

        def record_delivery(*a: Any, **kw: Any) -> Any:
            counter["n"] += 1
            if counter["n"] >= n_kill:
                _die()
            return real_delivery(*a, **kw)

        store.record_delivery = record_delivery  # type: ignore[method-assign]

    engine = Engine(store, client, policy=PollPolicy(**cfg["policy"]), owner=owner, concurrency=cfg["concurrency"],
                    lease_seconds=cfg["lease_seconds"], batch_size=cfg["batch_size"], clock=clock.now)
    outbox = None
    if cfg["sinks"]:
        from jobwatch.notify import parse_sinks

        outbox = Outbox(store, parse_sinks(cfg["sinks"]), owner=owner, clock=clock.now, timeout=2.0,
                        lease_seconds=cfg["outbox_lease_seconds"], backoff=Backoff(base=2.0, cap=10.0),
                        max_attempts=50)
    end = time.monotonic() + cfg["run_seconds"]
    summary = {"owner": owner, "ticks": 0, "polled": 0, "transitions": 0, "errors": 0, "lease_lost": 0,
               "delivered": 0, "done": False}
    from jobwatch.core.errors import StoreUnavailable

    summary["store_unavailable"] = []
    while time.monotonic() < end:
        try:
            res = engine.tick()
        except StoreUnavailable as exc:  # the trigger would retry the invocation; so do we, and report it
            summary["store_unavailable"].append(str(exc)[:300])
            time.sleep(cfg["idle_sleep"])
            continue
        summary["ticks"] += 1
        for k in ("polled", "transitions", "errors", "lease_lost"):
            summary[k] += getattr(res, k)
        if outbox is not None:
            summary["delivered"] += outbox.drain().delivered
        if not store.list_jobs(active=True, limit=1) and (
                outbox is None or not store.list_outbox(status="pending", limit=1)):
            summary["done"] = True
            break
        if res.polled == 0:
            time.sleep(cfg["idle_sleep"])  # nothing due: let emulated time pass (not a timing assertion)
    engine.close()
    client.close()
    store.close()
    if cfg["poll_log"]:
        with open(cfg["poll_log"], "a", encoding="utf-8") as f:
            f.writelines(json.dumps(p) + "\n" for p in polls)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
