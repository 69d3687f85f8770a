"""Parsing ``JOBWATCH_NOTIFY``: one URL-like spec per sink, every problem reported at once.

Specs are separated by new lines or ``;`` (commas are kept for option lists). A spec is
``<kind>://<target>?<option>=<value>&...``; options are split on ``&`` and percent-decoded, with ``+`` kept as a
plus (base64 secrets contain it). Options every sink takes: ``outcomes``, ``buckets``, ``tags`` (``k:v,...``),
``timeout`` (seconds), ``rate`` (``N/s``, ``N/min``, ``N/h``), ``name``, and ``endpoint`` (an ``http(s)://host:port``
override, for tests and private gateways). Unknown options are an error, except on ``webhook+``, where they stay in
the target URL's query. Secrets (robot keys, tokens, signing secrets, the webhook URL) are wrapped in
:class:`~jobwatch.redact.Secret` at once and never appear in an error text.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable
from urllib.parse import unquote

import requests

from jobwatch.core.errors import ConfigError, ValidationError
from jobwatch.core.models import JobState, NoticeKind, validate_bucket, validate_region
from jobwatch.core.redact import Secret
from jobwatch.notify.base import Route, Sink
from jobwatch.notify.chat import DINGTALK_BASE, FEISHU_BASE, LARK_BASE, SLACK_BASE, WECOM_BASE, DingTalkSink, FeishuSink, \
    SlackSink, WeComSink
from jobwatch.notify.log import LogSink
from jobwatch.notify.ratelimit import Rate
from jobwatch.notify.tencent import EventBridgeSink, SesSink, TdmqQueueSink, TdmqTopicSink
from jobwatch.notify.webhook import WebhookSink

# Each vendor's documented limit, per sink (override with rate=).
DEFAULT_RATES: dict[str, str | None] = {
    "webhook": None, "log": None,
    "wecom": "20/min", "dingtalk": "20/min", "feishu": "100/min", "lark": "100/min", "slack": "1/s",
    "eventbridge": "1000/s", "tdmq-queue": "20/s", "tdmq-topic": "20/s", "ses": "20/s",
}
COMMON = {"outcomes", "buckets", "tags", "timeout", "rate", "name", "endpoint"}
EXTRA: dict[str, set[str]] = {
    "webhook": {"secret"}, "wecom": set(), "dingtalk": {"secret"}, "feishu": {"secret"}, "lark": {"secret"},
    "slack": set(), "eventbridge": {"region", "source", "type"}, "tdmq-queue": {"region"},
    "tdmq-topic": {"region"}, "ses": {"region", "from", "to", "subject"}, "log": {"level"},
}
# The class each kind builds (lark is Feishu's international name, same API).
SINK_CLASSES: dict[str, type[Sink]] = {
    "webhook": WebhookSink, "wecom": WeComSink, "dingtalk": DingTalkSink, "feishu": FeishuSink,
    "lark": FeishuSink, "slack": SlackSink, "eventbridge": EventBridgeSink, "tdmq-queue": TdmqQueueSink,
    "tdmq-topic": TdmqTopicSink, "ses": SesSink, "log": LogSink,
}
OUTCOMES = {s.value.lower() for s in JobState} | {k.value for k in NoticeKind}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_EMAIL_RE = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_EB_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_QUEUE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def split_specs(text: str) -> list[str]:
    """Specs from the variable's text: one per line or ``;``-separated; blank lines and ``#`` comments skipped."""
    out: list[str] = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.extend(p.strip() for p in line.split(";") if p.strip())
    return out


def sink_class(spec: str) -> type[Sink] | None:
    """The class ``spec`` would build, judged by its scheme alone (None for an unknown one): what `jobwatch
    package` needs to choose extras without building (or validating) the sink."""
    scheme = spec.partition("://")[0].strip().lower()
    return SINK_CLASSES.get("webhook" if scheme.startswith("webhook+") else scheme)


def _credentials_source(credentials: Any) -> Callable[[], Any] | None:
    if credentials is None:
        return None
    if hasattr(credentials, "secret_id"):
        return lambda: credentials
    if callable(credentials):
        return credentials
    raise ValidationError("credentials", type(credentials).__name__, "expected an object or a zero-arg callable")


def parse_sinks(
    spec_text: str,
    *,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    credentials: Any = None,
) -> list[Sink]:
    """Build every sink of ``spec_text``; raise ConfigError listing every bad spec (by position and kind)."""
    if session is None:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=16)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    creds = _credentials_source(credentials)
    sinks: list[Sink] = []
    problems: list[str] = []
    for i, spec in enumerate(split_specs(spec_text), start=1):
        try:
            sinks.append(parse_sink(spec, session=session, clock=clock, wall=wall, credentials=creds))
        except ConfigError as exc:
            problems.extend(f"sink #{i} ({_scheme_label(spec)}): {p}" for p in exc.problems)
    seen: dict[str, int] = {}
    for s in sinks:
        seen[s.name] = seen.get(s.name, 0) + 1
    problems.extend(f"sink name {n!r} used {c} times: give each a distinct name=" for n, c in seen.items() if c > 1)
    if problems:
        raise ConfigError(problems)
    return sinks


def _scheme_label(spec: str) -> str:
    scheme = spec.partition("://")[0] if "://" in spec else "?"
    return scheme if re.match(r"^[a-z+-]{1,20}$", scheme) else "?"


def _options(query: str) -> tuple[dict[str, str], list[str], list[str]]:
    """Options, raw pairs (for webhook passthrough), and problems."""
    opts: dict[str, str] = {}
    raw: list[str] = []
    problems: list[str] = []
    for pair in query.split("&") if query else []:
        if not pair:
            continue
        k, eq, v = pair.partition("=")
        key = unquote(k)
        if key in opts:
            problems.append(f"option {key!r} given twice")
        opts[key] = unquote(v)
        raw.append(pair)
    return opts, raw, problems


def parse_sink(
    spec: str,
    *,
    session: requests.Session,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    credentials: Callable[[], Any] | None = None,
) -> Sink:
    """One spec to one sink, or ConfigError with every problem of that spec."""
    scheme, sep, rest = spec.partition("://")
    if not sep:
        raise ConfigError(["expected <kind>://... (e.g. wecom://<key>, webhook+https://host/path)"])
    kind = "webhook" if scheme in ("webhook+https", "webhook+http") else scheme
    if kind not in DEFAULT_RATES:
        raise ConfigError([f"unknown kind {_scheme_label(spec)!r}; expected one of: webhook+https, "
                           + ", ".join(k for k in DEFAULT_RATES if k != "webhook")])
    target, _, query = rest.partition("?")
    opts, raw_pairs, problems = _options(query)
    allowed = COMMON | EXTRA[kind]
    passthrough = []
    for pair in raw_pairs:
        key = unquote(pair.partition("=")[0])
        if key not in allowed:
            if kind == "webhook":
                passthrough.append(pair)
            else:
                problems.append(f"unknown option {key!r}; allowed: {', '.join(sorted(allowed))}")

    def check(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ValidationError as exc:
            problems.append(str(exc))
        except ValueError as exc:
            problems.append(str(exc))
        return None

    common: dict[str, Any] = {"clock": clock, "wall": wall}
    outcomes, buckets, tags = check(lambda: _outcomes(opts)), check(lambda: _buckets(opts)), check(lambda: _tags(opts))
    common["route"] = Route(outcomes or frozenset(), buckets or frozenset(), tags or {})
    common["timeout"] = check(lambda: _timeout(opts.get("timeout")))
    rate_text = opts.get("rate", DEFAULT_RATES[kind])
    common["rate"] = check(lambda: Rate.parse(rate_text)) if rate_text and rate_text != "none" else None
    name = opts.get("name")
    if name is not None and not _NAME_RE.match(name):
        problems.append(f"invalid name {name!r}: letters, digits, '.', '_' or '-' (1-64)")
    common["name"] = f"{kind}:{name}" if name else kind
    endpoint = check(lambda: _endpoint(opts["endpoint"])) if "endpoint" in opts else None
    if endpoint and kind in ("webhook", "log"):
        problems.append(f"option 'endpoint' does not apply to {kind}")

    sink = check(lambda: _build(kind, scheme, target, opts, passthrough, endpoint, session, credentials, common))
    if problems or sink is None:
        raise ConfigError(problems or ["invalid spec"])
    return sink


def _outcomes(opts: dict[str, str]) -> frozenset[str]:
    outcomes = frozenset(o.strip().lower() for o in opts.get("outcomes", "").split(",") if o.strip())
    bad = sorted(outcomes - OUTCOMES)
    if bad:
        raise ValidationError("outcomes", ",".join(bad), "expected states (Failed, Cancel, Success, ...) or "
                              "vanished, stalled, recovered")
    return outcomes


def _buckets(opts: dict[str, str]) -> frozenset[str]:
    return frozenset(validate_bucket(b.strip()) for b in opts.get("buckets", "").split(",") if b.strip())


def _tags(opts: dict[str, str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for t in (x.strip() for x in opts.get("tags", "").split(",")):
        if not t:
            continue
        k, colon, v = t.partition(":")
        if not colon or not k:
            raise ValidationError("tags", t, "expected key:value")
        tags[k] = v
    return tags


def _timeout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 60:
        raise ValidationError("timeout", text, "expected seconds, more than 0 and at most 60")
    return value


def _endpoint(text: str) -> str:
    m = re.match(r"^(https?)://([A-Za-z0-9.\-\[\]:]+)/?$", text)
    if not m:
        raise ValidationError("endpoint", text, "expected http(s)://host[:port] with no path")
    return f"{m.group(1)}://{m.group(2)}"


def _secret(opts: dict[str, str], required: bool = False) -> Secret | None:
    value = opts.get("secret")
    if not value:
        if required:
            raise ValidationError("secret", "", "required")
        return None
    return Secret(value)


def _build(kind: str, scheme: str, target: str, opts: dict[str, str], passthrough: list[str],
           endpoint: str | None, session: requests.Session, credentials: Callable[[], Any] | None,
           common: dict[str, Any]) -> Sink:
    name = common.pop("name")
    if kind == "webhook":
        if not target or target.startswith("/"):
            raise ValidationError("url", f"{scheme}://...", "expected a host and path after webhook+https://")
        url = scheme.split("+", 1)[1] + "://" + target + ("?" + "&".join(passthrough) if passthrough else "")
        return WebhookSink(name, Secret(url), secret=_secret(opts), session=session, **common)
    if kind in ("wecom", "dingtalk", "feishu", "lark"):
        token = unquote(target).strip("/")
        if not token or "/" in token:
            raise ValidationError("key", "***" if token else "", f"expected {kind}://<robot key or token>")
        base = endpoint or {"wecom": WECOM_BASE, "dingtalk": DINGTALK_BASE, "feishu": FEISHU_BASE,
                            "lark": LARK_BASE}[kind]
        if kind == "wecom":
            return WeComSink(name, Secret(token), base=base, session=session, **common)
        if kind == "dingtalk":
            return DingTalkSink(name, Secret(token), secret=_secret(opts), base=base, session=session, **common)
        return FeishuSink(name, Secret(token), secret=_secret(opts), base=base, session=session, **common)
    if kind == "slack":
        host, _, path = target.partition("/")
        if host != "hooks.slack.com" or not path.startswith("services/") or path.count("/") < 3:
            raise ValidationError("url", "slack://" + host + "/...",
                                  "expected slack://hooks.slack.com/services/T.../B.../...")
        return SlackSink(name, Secret(path), base=endpoint or SLACK_BASE, session=session, **common)
    if kind == "log":
        level = opts.get("level", "info")
        if level not in ("debug", "info", "warning", "error"):
            raise ValidationError("level", level, "expected debug, info, warning or error")
        return LogSink(name, level=level, **common)
    # Tencent Cloud sinks
    tc = dict(common, credentials=credentials, endpoint=endpoint)
    if kind == "ses":
        tc["region"] = validate_region(opts.get("region", "ap-guangzhou"))
        if not target.isdigit():
            raise ValidationError("template_id", target, "expected ses://<numeric TemplateID>")
        sender = opts.get("from", "")
        recipients = [a.strip() for a in opts.get("to", "").split(",") if a.strip()]
        if not _EMAIL_RE.match(sender.rpartition("<")[2].rstrip(">").strip() or "-"):
            raise ValidationError("from", sender, "expected a sender address (approved in SES)")
        bad = [a for a in recipients if not _EMAIL_RE.match(a)]
        if not recipients or bad or len(recipients) > 50:
            raise ValidationError("to", ",".join(bad) or opts.get("to", ""), "expected 1-50 addresses, comma-separated")
        return SesSink(name, int(target), sender=sender, recipients=recipients, subject=opts.get("subject"), **tc)
    if "region" not in opts:
        raise ValidationError("region", "", f"required for {kind} (e.g. region=ap-guangzhou)")
    tc["region"] = validate_region(opts["region"])
    if kind == "eventbridge":
        if not _EB_RE.match(target):
            raise ValidationError("event_bus_id", target, "expected eventbridge://<EventBusId>")
        return EventBridgeSink(name, target, source=opts.get("source", "ci-jobwatch"),
                               type_prefix=opts.get("type", "jobwatch"), **tc)
    if not _QUEUE_RE.match(target):
        raise ValidationError("queue" if kind == "tdmq-queue" else "topic", target,
                              "expected a name: a letter, then letters, digits, '-' or '_' (up to 64)")
    cls = TdmqQueueSink if kind == "tdmq-queue" else TdmqTopicSink
    return cls(name, target, **tc)
