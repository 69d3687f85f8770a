"""Shared machinery of the reliability suites: a clock that several processes agree on, a webhook receiver that
records every delivery, a TCP proxy that can be cut, the poller subprocess launcher, and the store checks
("every transition once, one notice per transition") that several suites assert.

Test code only: it drives the real engine, store, client and emulator; it replaces none of them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
POLLER = os.path.join(HERE, "poller.py")
SOAK = os.environ.get("JOBWATCH_SOAK", "") not in ("", "0", "false", "no")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)

# The lifecycle order the emulator's jobs follow (Pause is never entered unless a test pauses a job).
ORDER = {None: -1, "Submitted": 0, "Running": 1, "Success": 2, "Failed": 2, "Cancel": 2, "Vanished": 3}


def soak_or_quick(soak: Any, quick: Any) -> Any:
    return soak if SOAK else quick


class SharedClock:
    """Emulated time that every process computes the same way: ``start + (wall - origin) * factor``.

    The emulator (in the test process) and the pollers (subprocesses) read it independently, so a job's
    lifecycle, the pollers' leases and the emulator's request log share one timeline without IPC."""

    def __init__(self, origin: float, factor: float, start: datetime = START) -> None:
        self.origin, self.factor, self.start = origin, factor, start

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.origin) * self.factor)

    def spec(self) -> dict[str, Any]:
        return {"origin": self.origin, "factor": self.factor, "start": self.start.isoformat()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SharedClock":
        return cls(float(spec["origin"]), float(spec["factor"]), datetime.fromisoformat(spec["start"]))


# --- webhook receiver ---------------------------------------------------------------------------------------

@dataclass
class Received:
    webhook_id: str
    body: bytes
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a SIGKILLed sender resets its connection: expected here


@dataclass
class WebhookReceiver:
    """A loopback HTTP endpoint that records every POST (its ``webhook-id`` and body). ``status`` is what it
    answers (set it to 503 to emulate an outage the sink sees as retryable)."""

    status: int = 204
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> "WebhookReceiver":
        recv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if len(body) < n:  # the sender died mid-request: nothing was delivered
                    self.close_connection = True
                    return
                status = recv.status
                if 200 <= status < 300:
                    recv.received.append(Received(self.headers.get("webhook-id", ""), body,
                                                  {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = _QuietServer(("127.0.0.1", port), H)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def spec(self, secret: str = "whsec_" + "dGVzdC1vbmx5LXdlYmhvb2sta2V5IQ==") -> str:
        return f"webhook+http://127.0.0.1:{self.port}/hook?secret={secret}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.received]


# --- a TCP proxy that can be cut ----------------------------------------------------------------------------

class TcpProxy:
    """Forwards loopback connections to ``target``. ``cut()`` drops every open connection and refuses new ones
    (accepted, then closed at once) until ``restore()``: the store sees the database vanish mid-conversation."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._up = True
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            if not self._up:
                c.close()
                continue
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns.update((c, s))
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._up = False
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._sock.close()


# --- the poller subprocess ------------------------------------------------------------------------------------

def start_poller(config: dict[str, Any]) -> subprocess.Popen:
    """``poller.py`` with ``config`` as JSON; stdout is its JSON summary, stderr its errors."""
    return subprocess.Popen([sys.executable, POLLER, json.dumps(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=HERE)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"poller did not finish within {timeout} s: {err.decode()[-2000:]}")
    return proc.returncode, out.decode(), err.decode()


# --- store checks ---------------------------------------------------------------------------------------------

def dump_tables(store: Any) -> dict[str, list[tuple]]:
    """Every row of every table, through the store's own connection (for the checks and the secret scan)."""
    out: dict[str, list[tuple]] = {}
    with store._tx(write=False) as cur:
        for t in ("jw_meta", "jw_jobs", "jw_history", "jw_outbox", "jw_deliveries", "jw_watermarks"):
            cur.execute(f"SELECT * FROM {t}")
            out[t] = [tuple(r) for r in cur.fetchall()]
    return out


def check_history_and_outbox(store: Any, keys: Iterable[Any], truth: dict[str, str] | None = None) -> int:
    """Every job's history is a chain 1..n, forward in the lifecycle, no state twice, ending at the true final
    state (when ``truth`` is given); the outbox holds exactly one notice per history row, keyed job + seq.
    Returns the number of transitions."""
    keys = list(keys)
    with store._tx(write=False) as cur:
        cur.execute("SELECT region, bucket, job_id, seq, from_state, to_state FROM jw_history")
        hist = cur.fetchall()
        cur.execute("SELECT idem_key, kind, region, bucket, job_id, from_state, to_state FROM jw_outbox")
        outbox = cur.fetchall()
        cur.execute("SELECT region, bucket, job_id, state, active, transitions, lease_owner FROM jw_jobs")
        jobs = {(r, b, j): (s, a, n, lo) for r, b, j, s, a, n, lo in cur.fetchall()}
    by_job: dict[tuple, list[tuple]] = {}
    for r, b, j, seq, f, t in hist:
        by_job.setdefault((r, b, j), []).append((int(seq), f, t))
    notices = {}
    for key, kind, r, b, j, f, t in outbox:
        assert kind in ("transition", "vanished"), f"unexpected notice kind {kind} ({key})"
        assert key not in notices, f"notice {key} twice in the outbox"
        notices[key] = (r, b, j, f, t)
    total = 0
    for k in keys:
        jk = (k.region, k.bucket, k.job_id)
        rows = sorted(by_job.get(jk, []))
        seqs = [s for s, _, _ in rows]
        assert seqs == list(range(1, len(rows) + 1)), f"{k}: history seqs {seqs}"
        assert rows, f"{k}: no history"
        assert rows[0][1] is None, f"{k}: first transition from {rows[0][1]}"
        for (_, f1, t1), (_, f2, t2) in zip(rows, rows[1:]):
            assert t1 == f2, f"{k}: chain broken {t1} -> {f2}"
        states = [t for _, _, t in rows]
        assert len(set(states)) == len(states), f"{k}: a state recorded twice: {states}"
        assert [ORDER[s] for s in states] == sorted(ORDER[s] for s in states), f"{k}: backwards {states}"
        state, active, n, lease = jobs[jk]
        assert n == len(rows) and state == states[-1], f"{k}: record {state}/{n} vs history {states}"
        if truth is not None:
            assert state == truth[k.job_id] and not active, f"{k}: stored {state}, true {truth[k.job_id]}"
        for seq, f, t in rows:
            nk = f"{k}#{seq}:{t}"
            assert notices.get(nk) == (*jk, f, t), f"{k}: notice for seq {seq} missing or wrong: {notices.get(nk)}"
        total += len(rows)
    assert len(notices) == total == len(hist), f"{len(notices)} notices, {len(hist)} history rows, {total} checked"
    return total


def write_figures(name: str, figures: dict[str, Any]) -> None:
    """Soak runs append their figures (one JSON line) to ``$JOBWATCH_SOAK_FIGURES`` for RELIABILITY.md."""
    path = os.environ.get("JOBWATCH_SOAK_FIGURES")
    line = json.dumps({"suite": name, "soak": SOAK, "cores": os.cpu_count(),
                       "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **figures})
    print(line)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


# --- emulator on the shared clock -----------------------------------------------------------------------------

SECRET_ID = "AKIDTESTONLY0000000000000000000000000"
SECRET_KEY = "test-only-secret-key-not-real-0000"
BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"


ANSWER_FAULT_PATH = "/inventorytriggerjob/*"


def answer_faults(p: float = 0.03) -> list[Any]:
    """Issue 19's answer faults, in every campaign's default mix: answers that parse and look valid but are
    wrong. An answer about another job of the bucket (it must never become this job's state: the client
    retries it), a stale one (the previous state, within 15 s of a change: longer than the poll floor), and a
    sudden NonExistJobIds for a job that changed less than 8 s ago (shorter than the floor, so never twice in a
    row, which would be a confirmed vanish)."""
    from jobwatch.emulator import FaultRule

    return [FaultRule(kind="wrong_job", probability=p, path=ANSWER_FAULT_PATH),
            FaultRule(kind="stale", probability=2 * p, window=15.0, path=ANSWER_FAULT_PATH),
            FaultRule(kind="nonexist", probability=2 * p, window=8.0, path=ANSWER_FAULT_PATH)]


def start_emulator(clock: Any, *, seed: int = 1, submitted: float = 5, running: float = 60,
                   failure_ratio: float = 0.2, jitter: float = 0.5, faults: Iterable[Any] = ()) -> Any:
    from jobwatch.emulator import EmulatorServer, Lifecycle

    srv = EmulatorServer(host="127.0.0.1", port=0, credentials={SECRET_ID: SECRET_KEY}, clock=clock, seed=seed,
                         lifecycle=Lifecycle(submitted_seconds=submitted, running_seconds=running,
                                             failure_ratio=failure_ratio, jitter=jitter), faults=faults)
    return srv.start()


def create_jobs(emulator: Any, store: Any, n: int, now: datetime) -> list[Any]:
    from jobwatch.core.models import JobKey

    keys = [JobKey(REGION, BUCKET, emulator.create_job(BUCKET, name=f"r{i}")) for i in range(n)]
    for i in range(0, n, 200):
        assert all(store.track(keys[i:i + 200], now))
    return keys


def poller_config(store_url: str, emulator: Any, clock: SharedClock, owner: str, **kw: Any) -> dict[str, Any]:
    return {"store_url": store_url, "endpoint": emulator.url, "clock": clock.spec(), "owner": owner,
            "secret_id": SECRET_ID, "secret_key": SECRET_KEY, **kw}


def query_times(emulator: Any) -> dict[str, list[float]]:
    """Emulated time of every query answered without a fault, per job, sorted (a faulty answer's immediate retry
    by the same poller is not a second claim; the pollers' own log still shows any overlap of two pollers)."""
    out: dict[str, list[float]] = {}
    for r in list(emulator.request_log):
        if r.method == "GET" and r.job_id and r.status and r.path.startswith("/inventorytriggerjob/") \
                and not r.fault:
            out.setdefault(r.job_id, []).append(r.time.timestamp())
    return {k: sorted(v) for k, v in out.items()}


def _fired(emulator: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in list(emulator.request_log):
        for k in (r.fault or "").split(","):
            if k:
                out[k] = out.get(k, 0) + 1
    return out


def run_concurrent_pollers(store_url: str, n_jobs: int, n_procs: int, tmp_dir: str, *, factor: float = 5.0,
                           budget: float = 90.0, seed: int = 4) -> dict[str, Any]:
    """``n_procs`` poller processes on one store over one emulator until every job is final, then the checks:
    every job in its true final state, history exactly once, one notice per transition, no lease ever lost,
    and no job queried twice inside a lease (two queries of a job are at least the poll floor apart, which only
    holds if the second claim came after the first one's write; a double claim shows up as a gap near 0)."""
    from jobwatch.store import open_store

    clock = SharedClock(time.time(), factor)
    emulator = start_emulator(clock, seed=seed, faults=answer_faults())
    store = open_store(store_url)
    t0 = time.monotonic()
    try:
        keys = create_jobs(emulator, store, n_jobs, clock.now())
        log = os.path.join(tmp_dir, "polls.jsonl")
        floor = 10.0
        procs = [start_poller(poller_config(store_url, emulator, clock, f"inst-{i}", poll_log=log,
                                            lease_seconds=600.0, batch_size=25, concurrency=4,
                                            run_seconds=budget,
                                            policy={"min_seconds": floor, "max_seconds": 20, "backoff": 1.5,
                                                    "jitter": 0.0, "confirmations": 2}))
                 for i in range(n_procs)]
        summaries = []
        for p in procs:
            rc, out, err = finish(p, budget + 30)
            assert rc == 0, f"poller failed ({rc}): {err[-3000:]}"
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        elapsed = time.monotonic() - t0
        assert any(s["done"] for s in summaries), f"jobs not all final within {budget} s: {summaries}"
        truth = {k.job_id: emulator.job_state(BUCKET, k.job_id) for k in keys}
        transitions = check_history_and_outbox(store, keys, truth)
        assert sum(s["lease_lost"] for s in summaries) == 0, summaries
        times = query_times(emulator)
        ids = {k.job_id for k in keys}
        missing, extra = sorted(ids - set(times)), sorted(set(times) - ids)
        if missing or extra:  # say which, and what the emulator answered the first one
            first = (missing or extra)[0]
            seen = [(r.time.isoformat(), r.status, r.fault) for r in list(emulator.request_log) if r.job_id == first]
            raise AssertionError(f"jobs with no clean answer: {len(missing)} {missing[:3]}; jobs queried but not "
                                 f"created: {len(extra)} {extra[:3]}; requests for {first}: {seen}")
        min_gap = min((b - a for v in times.values() for a, b in zip(v, v[1:])), default=floor)
        close = [(j, v) for j, v in times.items() if any(b - a < floor - 1e-3 for a, b in zip(v, v[1:]))]
        assert not close, f"{len(close)} jobs queried twice inside a lease, e.g. {close[:3]}"
        # the pollers' own log: no job was ever being queried by two instances at once
        with open(log, encoding="utf-8") as f:
            polls = [json.loads(line) for line in f]
        by_job: dict[str, list[dict[str, Any]]] = {}
        for p in polls:
            by_job.setdefault(p["job"], []).append(p)
        for j, ps in by_job.items():
            ps.sort(key=lambda p: p["t0"])
            for a, b in zip(ps, ps[1:]):
                assert b["t0"] >= a["t1"], f"job {j} queried by {a['owner']} and {b['owner']} at once"
        owners = {p["owner"] for p in polls}
        assert len(owners) == n_procs, f"only {sorted(owners)} did any work"
        notices = len(dump_tables(store)["jw_outbox"])
        store_errors = [e for s in summaries for e in s.get("store_unavailable", [])]
        return {"store_unavailable_retried": len(store_errors), "store_errors_sample": store_errors[:3],
                "jobs": n_jobs, "processes": n_procs, "queries": sum(len(v) for v in times.values()),
                "transitions": transitions, "notices": notices, "double_polls": len(close),
                "min_gap_emulated_s": round(min_gap, 3), "lease_lost": 0, "seconds": round(elapsed, 1),
                "speed_factor": factor, "answer_faults": _fired(emulator)}
    finally:
        store.close()
        emulator.stop()


def run_crash_campaign(store_url: str, runs: int, n_jobs: int, seed: int, *, factor: float = 10.0,
                       modes: tuple[str, ...] = ("timer", "poll", "tx", "delivery")) -> dict[str, Any]:
    """Poller processes SIGKILLed one after another at seeded points (from outside at a random moment, after
    the n-th answer, inside the write transaction, between a delivery and its record), then one clean run.
    Checks: every job final as the service says, every transition once with its one notice, every notice
    delivered, and any notice the receiver saw twice came with the same webhook-id and the same body."""
    import random

    from jobwatch.store import open_store

    rng = random.Random(seed)
    clock = SharedClock(time.time(), factor)
    emulator = start_emulator(clock, seed=seed, faults=answer_faults())
    receiver = WebhookReceiver().start()
    store = open_store(store_url)
    t0 = time.monotonic()
    kills: dict[str, int] = {m: 0 for m in modes}
    completed_early = 0
    try:
        # half the jobs at once, the rest in waves before each run, so every run finds work under way
        first = n_jobs // 2
        keys = create_jobs(emulator, store, first, clock.now())
        waves = [(n_jobs - first) // runs + (1 if i < (n_jobs - first) % runs else 0) for i in range(runs)]
        base = dict(lease_seconds=30.0, outbox_lease_seconds=20.0, batch_size=10, concurrency=4,
                    sinks=receiver.spec(), run_seconds=30.0)
        for i in range(runs):
            mode = modes[i % len(modes)] if i < len(modes) else rng.choice(modes)
            if waves[i]:
                keys += create_jobs(emulator, store, waves[i], clock.now())
            kill = None
            if mode == "poll":
                kill = {"mode": "poll", "n": rng.randint(1, 10)}
            elif mode == "tx":
                kill = {"mode": "tx", "n": rng.randint(1, 20)}
            elif mode == "delivery":
                kill = {"mode": "delivery", "n": rng.randint(1, 6)}
            proc = start_poller(poller_config(store_url, emulator, clock, f"crash-{i}", kill=kill, **base))
            if mode == "timer":
                try:
                    proc.wait(timeout=rng.uniform(0.6, 2.0))
                except subprocess.TimeoutExpired:
                    proc.kill()
            rc, out, err = finish(proc, 60)
            if rc == -9:
                kills[mode] += 1
            elif rc == 0:
                completed_early += 1
            else:
                raise AssertionError(f"run {i} ({mode}) failed with {rc}: {err[-3000:]}")
        rc, out, err = finish(start_poller(poller_config(store_url, emulator, clock, "final", **{
            **base, "run_seconds": 60.0})), 90)
        assert rc == 0 and json.loads(out.strip().splitlines()[-1])["done"], f"final run: {out} {err[-3000:]}"
        truth = {k.job_id: emulator.job_state(BUCKET, k.job_id) for k in keys}
        transitions = check_history_and_outbox(store, keys, truth)
        tables = dump_tables(store)
        outbox_keys = {r[1] for r in tables["jw_outbox"]}
        statuses = {r[12] for r in tables["jw_outbox"]}
        assert statuses == {"done"}, f"notices not all delivered: {statuses}"
        got: dict[str, set[bytes]] = {}
        for r in receiver.received:
            got.setdefault(r.webhook_id, set()).add(r.body)
        assert set(got) == outbox_keys, f"missing at the receiver: {sorted(outbox_keys - set(got))[:5]}; " \
                                        f"unknown: {sorted(set(got) - outbox_keys)[:5]}"
        for wid, bodies in got.items():
            assert len(bodies) == 1, f"{wid} delivered with different bodies: {sorted(bodies)}"
            assert json.loads(next(iter(bodies)))["id"] == wid
        duplicates = len(receiver.received) - len(got)
        return {"jobs": n_jobs, "runs": runs, "kills": sum(kills.values()), "kills_by_point": kills,
                "completed_before_kill": completed_early, "transitions": transitions, "notices": len(outbox_keys),
                "lost": 0, "redeliveries_same_key": duplicates, "duplicates_other_key": 0,
                "seconds": round(time.monotonic() - t0, 1), "answer_faults": _fired(emulator)}
    finally:
        store.close()
        receiver.stop()
        emulator.stop()
