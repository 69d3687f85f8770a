"""JOBWATCH_NOTIFY parsing: every kind, routing options, defaults, and every problem reported at once."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from jobwatch.core.errors import ConfigError
from jobwatch.core.models import JobKey, Notice, NoticeKind
from jobwatch.notify import parse_sinks, sample_notice, split_specs
from jobwatch.notify.chat import DingTalkSink, FeishuSink, LarkSink, SlackSink, WeComSink
from jobwatch.notify.log import LogSink
from jobwatch.notify.tencent import EventBridgeSink, SesSink, TdmqQueueSink, TdmqTopicSink
from jobwatch.notify.webhook import WebhookSink

WH = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CANARY = "canary-key-7d6c5b4a"

ALL = f"""
# one sink per line, or ;-separated
webhook+https://example.com/hook?secret={WH}&outcomes=Failed,stalled&name=ops
wecom://{CANARY}; dingtalk://{CANARY}?secret=SEC{CANARY}
feishu://{CANARY}?secret={CANARY}
lark://{CANARY}?name=intl
slack://hooks.slack.com/services/T1/B2/{CANARY}
eventbridge://eb-7rbh5ehz?region=ap-guangzhou&source=ci-jobwatch
tdmq-queue://jobwatch?region=ap-guangzhou
tdmq-topic://jobwatch?region=ap-guangzhou
ses://12345?from=noreply@example.com&to=a@x.com,b@y.com
log://
"""


def notice(outcome_state: str = "Failed", kind: NoticeKind = NoticeKind.TRANSITION, bucket: str = "media-1250000000",
           tags: dict | None = None) -> Notice:
    return Notice("k1", kind, JobKey("ap-guangzhou", bucket, "b01"), "Running", outcome_state,
                  datetime(2025, 1, 1, tzinfo=timezone.utc), None, tags or {})


def test_every_kind_parses_with_its_name_and_default_rate():
    sinks = parse_sinks(ALL)
    got = [(type(s), s.name, str(s.limiter.rate) if s.limiter else None) for s in sinks]
    assert got == [
        (WebhookSink, "webhook:ops", None), (WeComSink, "wecom", "20/min"), (DingTalkSink, "dingtalk", "20/min"),
        (FeishuSink, "feishu", "100/min"), (LarkSink, "lark:intl", "100/min"), (SlackSink, "slack", "1/s"),
        (EventBridgeSink, "eventbridge", "1000/s"), (TdmqQueueSink, "tdmq-queue", "20/s"),
        (TdmqTopicSink, "tdmq-topic", "20/s"), (SesSink, "ses", "20/s"), (LogSink, "log", None)]
    assert sinks[4].base == "https://open.larksuite.com" and sinks[3].base == "https://open.feishu.cn"


def test_secrets_never_in_repr():
    text = " ".join(repr(s) + s.describe() for s in parse_sinks(ALL))
    assert CANARY not in text and "MfKQ9r8G" not in text and "example.com/hook" not in text


def test_split_specs():
    assert split_specs("a://1; b://2\n\n # c://3\n d://4?x=1,2") == ["a://1", "b://2", "d://4?x=1,2"]


def test_all_problems_reported_together_without_secrets():
    bad = (f"wecom://\nfoo://x\neventbridge://bus\nslack://evil.example/{CANARY}\n"
           f"webhook+https://h/p?secret=whsec_{CANARY}\ndingtalk://{CANARY}?outcomes=Fialed&rate=3/day&bogus=1\n"
           f"ses://abc?from=x&to=\nlog://?timeout=0\nwecom://{CANARY}?buckets=NoSuch&tags=novalue&endpoint=ftp://x")
    with pytest.raises(ConfigError) as ei:
        parse_sinks(bad)
    problems = ei.value.problems
    text = "\n".join(problems)
    assert CANARY not in text
    for want in ["sink #1 (wecom)", "sink #2 (foo): unknown kind", "sink #3 (eventbridge): invalid region",
                 "sink #4 (slack)", "sink #5 (webhook+https): invalid secret", "invalid outcomes 'fialed'",
                 "invalid rate '3/day'", "unknown option 'bogus'", "sink #7 (ses): invalid template_id",
                 "sink #8 (log): invalid timeout", "invalid bucket 'NoSuch'", "invalid tags 'novalue'",
                 "invalid endpoint 'ftp://x'"]:
        assert want in text, want


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="sink name 'wecom' used 2 times"):
        parse_sinks(f"wecom://a{CANARY}\nwecom://b{CANARY}")
    assert [s.name for s in parse_sinks(f"wecom://a{CANARY}?name=a\nwecom://b{CANARY}?name=b")] == \
        ["wecom:a", "wecom:b"]


def test_plus_in_a_secret_is_kept_and_percent_decoding_applies():
    [s] = parse_sinks("dingtalk://tok?secret=SEC+a/b%3D")
    assert s.secret.reveal() == "SEC+a/b="


def test_options_and_overrides():
    [s] = parse_sinks(f"wecom://{CANARY}?timeout=2.5&rate=5/s&endpoint=http://127.0.0.1:9000/")
    assert s.timeout == 2.5 and str(s.limiter.rate) == "5/s" and s.base == "http://127.0.0.1:9000"
    [s] = parse_sinks(f"wecom://{CANARY}?rate=none")
    assert s.limiter is None
    [s] = parse_sinks("eventbridge://eb-1?region=ap-beijing&endpoint=http://127.0.0.1:1&type=ci")
    assert s.endpoint == "http://127.0.0.1:1" and s.region == "ap-beijing" and s.type_prefix == "ci"


def test_routing_by_outcome_bucket_and_tag():
    [s] = parse_sinks("log://?outcomes=failed,Cancel,stalled&buckets=media-1250000000&tags=team:media,env:prod")
    ok_tags = {"team": "media", "env": "prod", "x": "y"}
    assert s.accepts(notice("Failed", tags=ok_tags))
    assert s.accepts(notice("Cancel", tags=ok_tags))
    assert s.accepts(notice(None, kind=NoticeKind.STALLED, tags=ok_tags))
    assert not s.accepts(notice("Success", tags=ok_tags))
    assert not s.accepts(notice("Failed", bucket="other-1250000000", tags=ok_tags))
    assert not s.accepts(notice("Failed", tags={"team": "media"}))
    assert s.accepts(sample_notice())  # `notify test` reaches every sink


def test_no_options_accepts_everything():
    [s] = parse_sinks("log://")
    assert s.accepts(notice("Success")) and s.accepts(notice(None, kind=NoticeKind.VANISHED))


def test_credentials_object_or_callable():
    class C:
        secret_id, secret_key, token = "id", "key", None

    c = C()
    [a] = parse_sinks("eventbridge://eb?region=ap-guangzhou", credentials=c)
    [b] = parse_sinks("eventbridge://eb?region=ap-guangzhou", credentials=lambda: c)
    assert a.credentials() is c and b.credentials() is c
    with pytest.raises(ValueError):
        parse_sinks("log://", credentials=42)


def test_sample_notice_is_a_test_notice_with_a_fresh_key():
    a, b = sample_notice(), sample_notice()
    assert a.kind is NoticeKind.TEST and a.outcome == "test" and a.idempotency_key != b.idempotency_key
    assert a.payload()["job"]["state"] == "Failed"


def test_log_sink_lines_carry_the_invocations_request_id():
    """send_concurrently runs each send in a copy of the caller's context: lines written in its worker threads
    keep the invocation's bound fields."""
    import structlog
    from structlog.testing import capture_logs

    from jobwatch.app.logs import bind_invocation
    from jobwatch.notify import send_concurrently

    n = Notice("ap-guangzhou/b-1250000000/j1#1:Success", NoticeKind.TRANSITION,
               JobKey("ap-guangzhou", "b-1250000000", "j1"), "Running", "Success",
               datetime(2026, 1, 1, tzinfo=timezone.utc))
    bind_invocation("req-42", "jobwatch-poller")
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            [res] = send_concurrently([(n, LogSink("audit"))], timeout=2.0)
    finally:
        structlog.contextvars.clear_contextvars()
    assert res.ok
    [line] = [entry for entry in logs if entry["event"] == "notice"]
    assert line["request_id"] == "req-42" and line["sink"] == "audit"


def test_a_new_sink_is_one_new_module_that_registers_itself(tmp_path):
    """Adding a sink touches one new file: its class declares kind, options and from_spec, and parse_sinks finds
    it by its scheme with the common options (name, rate, route) applied. Run in a child process so the
    probe module never stays registered in this one."""
    import subprocess
    import sys
    from pathlib import Path

    import jobwatch.notify as pkg

    probe = Path(pkg.__path__[0]) / "zz_probe_sink.py"
    probe.write_text(
        "from jobwatch.notify.base import Sink, SinkSpec\n\n\n"
        "class ProbeSink(Sink):\n"
        "    kind = 'probe'\n"
        "    options = frozenset({'colour'})\n"
        "    default_rate = '5/s'\n\n"
        "    @classmethod\n"
        "    def from_spec(cls, spec: SinkSpec) -> 'ProbeSink':\n"
        "        sink = cls(spec.name, **spec.common)\n"
        "        sink.colour = spec.options.get('colour')\n"
        "        return sink\n", encoding="utf-8")
    code = ("from jobwatch.notify import parse_sinks\n"
            "(s,) = parse_sinks('probe://x?colour=red&name=p&outcomes=failed')\n"
            "print(type(s).__name__, s.name, s.colour, s.limiter.rate, sorted(s.route.outcomes))\n"
            "try:\n    parse_sinks('probe://x?size=2')\nexcept Exception as e:\n    print('refused', e)\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        probe.unlink()
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()[0], "\n".join(r.stdout.splitlines()[1:])
    assert first.startswith("ProbeSink probe:p red") and "['failed']" in first
    assert "unknown option 'size'" in second and "colour" in second
