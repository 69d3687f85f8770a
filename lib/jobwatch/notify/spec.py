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

import importlib
import pkgutil
import re
import time
from typing import Any, Callable
from urllib.parse import unquote

import requests

from jobwatch.core.errors import ConfigError, ValidationError
from jobwatch.core.models import JobState, NoticeKind, validate_bucket
from jobwatch.notify.base import REGISTRY, Route, Sink, SinkSpec
from jobwatch.notify.ratelimit import Rate

COMMON = frozenset({"outcomes", "buckets", "tags", "timeout", "rate", "name", "endpoint"})
OUTCOMES = {s.value.lower() for s in JobState} | {k.value for k in NoticeKind}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def registry() -> dict[str, type[Sink]]:
    """Every sink class by spec scheme. Each sink module of this package registers its classes when imported
    (by declaring ``kind``); importing them all here is what makes a new module a new sink."""
    if not _loaded:
        import jobwatch.notify as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
        _loaded.append(True)
    return REGISTRY


_loaded: list[bool] = []


def kinds() -> dict[str, type[Sink]]:
    """Every sink class by its kind (``webhook`` once, not per scheme)."""
    return {c.kind: c for c in registry().values()}


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
    return registry().get(spec.partition("://")[0].strip().lower())


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
    cls = registry().get(scheme)
    if cls is None:
        known = sorted(k for k in registry() if k != "webhook+http")
        raise ConfigError([f"unknown kind {_scheme_label(spec)!r}; expected one of: " + ", ".join(known)])
    target, _, query = rest.partition("?")
    opts, raw_pairs, problems = _options(query)
    allowed = COMMON | cls.options
    passthrough = []
    for pair in raw_pairs:
        key = unquote(pair.partition("=")[0])
        if key not in allowed:
            if cls.passthrough_options:
                passthrough.append(pair)
            else:
                problems.append(f"unknown option {key!r}; allowed: {', '.join(sorted(allowed))}")

    def check(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (ValidationError, ValueError) as exc:
            problems.append(str(exc))
        return None

    outcomes, buckets, tags = check(lambda: _outcomes(opts)), check(lambda: _buckets(opts)), check(lambda: _tags(opts))
    rate_text = opts.get("rate", cls.default_rate)
    common: dict[str, Any] = {
        "clock": clock, "wall": wall,
        "route": Route(outcomes or frozenset(), buckets or frozenset(), tags or {}),
        "timeout": check(lambda: _timeout(opts.get("timeout"))),
        "rate": check(lambda: Rate.parse(rate_text)) if rate_text and rate_text != "none" else None,
    }
    name = opts.get("name")
    if name is not None and not _NAME_RE.match(name):
        problems.append(f"invalid name {name!r}: letters, digits, '.', '_' or '-' (1-64)")
    endpoint = check(lambda: _endpoint(opts["endpoint"])) if "endpoint" in opts else None
    if endpoint and not cls.takes_endpoint:
        problems.append(f"option 'endpoint' does not apply to {cls.kind}")
    parsed = SinkSpec(f"{cls.kind}:{name}" if name else cls.kind, scheme, target, opts, tuple(passthrough), endpoint,
                      session, credentials, common)
    sink = check(lambda: cls.from_spec(parsed))
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
