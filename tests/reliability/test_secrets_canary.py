"""Secrets: canary values for the SecretKey, the session token (temporary credentials), the webhook secret and the
database password run through the function's paths (a tick with retries over faults at DEBUG logging, notices to a
webhook, signature failures, a store login failure, the CLI) and must never appear in logs (stdout and stderr),
exception texts or reprs, the payloads and headers the webhook receiver got, the CLI's output, or any table of
the store."""

from __future__ import annotations

import base64
import io
import logging
import uuid
from contextlib import redirect_stderr, redirect_stdout

import pymysql
import pytest
from rel_support import BUCKET, REGION, START, WebhookReceiver, dump_tables

from jobwatch import cli
from jobwatch.app.orchestrator import App
from jobwatch.ci.client import CIClient
from jobwatch.app.config import load_settings
from jobwatch.ci.credentials import StaticProvider
from jobwatch.emulator import EmulatorServer, FaultRule, Lifecycle, ManualClock
from jobwatch.core.errors import JobwatchError
from jobwatch.app.logs import configure_logging
from jobwatch.store import open_store

SECRET_ID = "AKIDCANARY000000000000000000000000000"
SECRET_KEY = "canary-secretkey-91c3e77d5b"
WEBHOOK_KEY = b"canary-webhook-key-4f0e2a"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
DB_PASSWORD = "canary-dbpw-8d2b61f0"


@pytest.mark.mysql
def test_canary_secrets_never_leak(mysql_url):
    db = mysql_url.rsplit("/", 1)[1]
    host = mysql_url.split("@", 1)[1].split("/")[0]
    user = f"jwc{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=host.split(":")[0], port=int(host.split(":")[1]), user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{DB_PASSWORD}'")
        cur.execute(f"GRANT ALL ON {db}.* TO '{user}'@'%'")
    store_url = f"mysql://{user}:{DB_PASSWORD}@{host}/{db}"
    clock = ManualClock(start=START)
    faults = [FaultRule(kind="status", status=500, probability=0.2), FaultRule(kind="reset", probability=0.1),
              FaultRule(kind="truncate", probability=0.1)]
    emulator = EmulatorServer(credentials={SECRET_ID: SECRET_KEY}, clock=clock, seed=5, faults=faults,
                              lifecycle=Lifecycle(submitted_seconds=5, running_seconds=30, failure_ratio=0.3)).start()
    tmp_id, tmp_key, token = emulator.issue_token(SECRET_ID)
    canaries = {"secret key": SECRET_KEY, "temporary key": tmp_key, "session token": token,
                "webhook secret": WEBHOOK_SECRET, "webhook key": base64.b64encode(WEBHOOK_KEY).decode(),
                "db password": DB_PASSWORD}
    receiver = WebhookReceiver().start()
    seen: list[str] = []
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(err)
    root.addHandler(handler)
    env = {"JOBWATCH_STORE_URL": store_url, "JOBWATCH_CI_ENDPOINT": emulator.url, "JOBWATCH_SECRET_ID": tmp_id,
           "JOBWATCH_SECRET_KEY": tmp_key, "JOBWATCH_SESSION_TOKEN": token, "JOBWATCH_HTTP_MAX_ATTEMPTS": "3",
           "JOBWATCH_NOTIFY": receiver.spec(WEBHOOK_SECRET), "JOBWATCH_LOG_LEVEL": "debug",
           "JOBWATCH_POLL_MIN_SECONDS": "10", "JOBWATCH_POLL_MAX_SECONDS": "20", "JOBWATCH_LOG_FORMAT": "json"}
    try:
        with redirect_stdout(out), redirect_stderr(err):
            configure_logging("debug", "json", cache=False)  # no logger stays bound to this test's streams
            app = App(load_settings(env), environ=env, clock=clock.now)
            ids = [emulator.create_job(BUCKET) for _ in range(8)]
            from jobwatch.core.models import JobKey

            seen.append(repr(app.register([JobKey(REGION, BUCKET, j) for j in ids]).as_dict()))
            for _ in range(12):
                clock.advance(10)
                seen.append(repr(app.tick().as_dict()))
            seen += [repr(app.client), repr(app.store), repr(app.settings), repr(app.credentials), repr(app.sinks)]
            # error paths: a wrong key (signature refused), a wrong database password, a bad store URL
            bad = CIClient(StaticProvider(SECRET_ID, "canary-wrong-key-0e9d8c"), endpoint=emulator.url,
                           max_attempts=2, sleep=lambda s: None)
            canaries["wrong key"] = "canary-wrong-key-0e9d8c"
            for call in (lambda: bad.get_job(BUCKET, REGION, ids[0]),
                         lambda: open_store(store_url.replace(DB_PASSWORD, DB_PASSWORD + "x")),
                         lambda: open_store(f"mysql://{user}:{DB_PASSWORD}@127.0.0.1:1/{db}"),
                         lambda: load_settings({**env, "JOBWATCH_STORE_URL": f"mysql://{user}:{DB_PASSWORD}@"})):
                with pytest.raises(JobwatchError) as info:
                    call()
                seen += [str(info.value), repr(info.value), repr(info.value.__context__)]
            # the CLI, with the same environment
            import os

            old = dict(os.environ)
            os.environ.update(env)
            try:
                for argv in (["job", "show", ids[0], "--bucket", BUCKET, "--region", REGION, "--json"],
                             ["job", "show", ids[1], "--bucket", BUCKET, "--region", REGION],
                             ["config", "show"]):
                    seen.append(f"exit {cli.main(argv)}")
            finally:
                os.environ.clear()
                os.environ.update(old)
            app.close()
        assert receiver.received, "no notice reached the webhook: the notice path was not exercised"
        assert "ci_retry" in out.getvalue() + err.getvalue(), "no retry was logged: the retry path was not exercised"
        tables = dump_tables(open_store(mysql_url))
        places = {"stdout": out.getvalue(), "stderr/logging": err.getvalue(), "values": "\n".join(seen),
                  "webhook": "\n".join(r.body.decode() + repr(r.headers) for r in receiver.received),
                  "store": repr(tables)}
        for where, text in places.items():
            for name, value in canaries.items():
                assert value not in text, f"the {name} leaked into {where}"
    finally:
        root.removeHandler(handler)
        receiver.stop()
        emulator.stop()
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()
