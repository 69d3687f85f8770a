"""Every setting in one table: its variable, type, default, range and meaning, and the loader that checks them.

SCF passes configuration as environment variables, so they are the primary source; a TOML file
(``JOBWATCH_CONFIG_FILE``) is an optional base for the CLI, and the environment wins over it. The whole
configuration is checked at start-up and every problem is reported at once (an operator fixing one variable per
deploy would lose an afternoon). Problems name the variable and the bad value; secret values are never shown.
The README's configuration table is rendered from :data:`SETTINGS`, so the two cannot drift apart.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote, unquote, urlsplit

from jobwatch.core.errors import ConfigError, ValidationError, closest
from jobwatch.core.models import validate_bucket
from jobwatch.core.regions import check_region, unknown_region_note
from jobwatch.core.redact import Secret

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # SCF's newest runtime is 3.10, which has no tomllib
    import tomli as _toml

ENV_PREFIX = "JOBWATCH_"
# Variables under this prefix belong to test harnesses and are never reported as unknown.
RESERVED_PREFIXES = ("JOBWATCH_TEST_",)


class Kind(str, enum.Enum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DURATION = "duration"  # seconds, as a float; accepts 90, 1.5, "90s", "15m", "2h", "1d"
    ENUM = "enum"
    LIST = "list"  # comma- or whitespace-separated in a variable, an array in TOML
    SECRET = "secret"
    JSON = "json"  # a JSON object in a variable, a table in TOML


Check = Callable[[Any], Any]
"""Validates (and may convert) a parsed value; raises ``ValueError`` with a reason."""


@dataclass(frozen=True)
class SettingDef:
    name: str
    attr: str
    kind: Kind
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    check: Check | None = None
    # Read when the variable itself is unset (SCF's own variables, e.g. SCF_FUNCTIONNAME).
    fallback_env: tuple[str, ...] = ()
    # The value hides secrets even though its type is not SECRET (a URL with a password, sink specs).
    sensitive: bool = False
    # What the README's table says for a default computed at load time (e.g. the store's path).
    default_doc: str | None = None

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET or self.sensitive


# --- where things live by default -----------------------------------------------------------------------------

APP_DIR = "ci-jobwatch"
STORE_FILE = "jobwatch.db"
SCF_STORE_PATH = "/tmp/jobwatch.db"  # /tmp is SCF's only writable directory (512 MB); the code directory is read-only


def on_scf(environ: Mapping[str, str] | None = None) -> bool:
    """True inside an SCF function: SCF documents ``TENCENTCLOUD_RUNENV=SCF`` among its built-in variables."""
    env = os.environ if environ is None else environ
    return (env.get("TENCENTCLOUD_RUNENV") or "").strip().upper() == "SCF"


def state_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The user's directory for ci-jobwatch's state: ``$XDG_STATE_HOME/ci-jobwatch`` (default
    ``~/.local/state/ci-jobwatch``, the XDG base directory rule), ``%LOCALAPPDATA%\\ci-jobwatch`` on Windows,
    ``~/Library/Application Support/ci-jobwatch`` on macOS unless ``XDG_STATE_HOME`` is set. Never the current
    directory: a store must not depend on where a command happened to be run."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    xdg = (env.get("XDG_STATE_HOME") or "").strip()
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative path is invalid and ignored
        return os.path.join(xdg, APP_DIR)
    if plat.startswith("win"):
        base = (env.get("LOCALAPPDATA") or "").strip() or os.path.join(_home(env), "AppData", "Local")
        return os.path.join(base, APP_DIR)
    if plat == "darwin":
        return os.path.join(_home(env), "Library", "Application Support", APP_DIR)
    return os.path.join(_home(env), ".local", "state", APP_DIR)


def _home(env: Mapping[str, str]) -> str:
    home = (env.get("HOME") or env.get("USERPROFILE") or "").strip()
    return home or os.path.expanduser("~")


def sqlite_url(path: str) -> str:
    """``sqlite:///`` + the absolute path, percent-quoted (the store unquotes it)."""
    return "sqlite:///" + quote(os.path.abspath(path).replace(os.sep, "/"), safe="/:")


def default_store_url(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The store used when ``JOBWATCH_STORE_URL`` is unset: SQLite in ``/tmp`` on SCF, else in the user's state
    directory (:func:`state_dir`)."""
    if on_scf(environ):
        return sqlite_url(SCF_STORE_PATH)
    return sqlite_url(os.path.join(state_dir(environ, platform), STORE_FILE))


def store_warning(store_url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """What to warn about a store on SCF: SQLite there lives in one instance's ``/tmp`` (or the read-only code
    directory), which is lost when SCF recycles the instance and is not shared by parallel instances."""
    if not on_scf(environ) or not store_url.startswith("sqlite:"):
        return None
    return ("the store is SQLite on SCF: it lives in this instance's /tmp, does not survive instance recycling "
            "and is not shared between instances; set JOBWATCH_STORE_URL to a mysql:// URL (TencentDB) to keep "
            "job state")


# --- value checks -------------------------------------------------------------------------------------------

def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value.rstrip("/")


def _store_password(url: str) -> str | None:
    pw = urlsplit(url).password
    return unquote(pw) if pw else None


def _mask_store_url(url: str) -> str:
    """The URL with its password replaced, safe for messages and ``config show``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return url.replace(parts.netloc, f"{user}:***@{netloc[1]}", 1)


def _check_store_url(value: str) -> Secret:
    parts = urlsplit(value)
    scheme = parts.scheme
    if "?" in value:
        names = ", ".join(repr(p.split("=", 1)[0]) for p in parts.query.split("&") if p) or "an empty query"
        raise ValueError(f"unknown query option(s) {names}: a store URL takes no options")
    if scheme == "sqlite":
        if not value.startswith("sqlite:///") or len(value) <= len("sqlite:///"):
            raise ValueError("expected sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:")
    elif scheme in ("mysql", "mysql+pymysql"):
        if not parts.hostname:
            raise ValueError("expected mysql://user:password@host:port/database (no host)")
        try:
            parts.port
        except ValueError:
            raise ValueError("expected mysql://user:password@host:port/database (bad port)") from None
        if not parts.path.strip("/"):
            raise ValueError("expected mysql://user:password@host:port/database (no database)")
        if not parts.username:
            raise ValueError("expected mysql://user:password@host:port/database (no user)")
    else:
        raise ValueError("expected a sqlite:/// or mysql:// URL")
    password = _store_password(value)
    if password:
        Secret(password)  # remembered, so the log scrubber masks it inside driver errors too
    return Secret(value)


def _check_discovery_item(item: str) -> tuple[str, str]:
    region, sep, bucket = item.partition("/")
    if not sep:
        raise ValueError(f"item {item!r}: expected region/bucket")
    try:
        return check_region(region), validate_bucket(bucket)
    except ValidationError as exc:
        raise ValueError(f"item {item!r}: {exc}") from None


def _check_discovery(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(_check_discovery_item(i) for i in items)


def _check_region(value: str) -> str:
    try:
        return check_region(value)
    except ValidationError as exc:
        raise ValueError(exc.reason) from None


def region_warnings(settings: "Settings") -> list[tuple[str, str, str]]:
    """(variable, region, note) for each configured region that is well-formed but not among the regions this
    version knows: said by ``config check`` and logged when the App starts, never a configuration problem (see
    :mod:`jobwatch.core.regions`: the Cloud Infinite region list could not be confirmed)."""
    named = [("JOBWATCH_DEFAULT_REGION", settings.default_region)]
    named += [("JOBWATCH_DISCOVERY", region) for region, _ in settings.discovery or ()]
    out: list[tuple[str, str, str]] = []
    for var, region in dict.fromkeys(named):
        note = unknown_region_note(region) if region else None
        if note is not None:
            out.append((var, region, note))
    return out


def _check_bucket(value: str) -> str:
    try:
        return validate_bucket(value)
    except ValidationError as exc:
        raise ValueError(exc.reason) from None


def _check_file(value: str) -> str:
    if not os.path.isfile(os.path.expanduser(value)):
        raise ValueError("no such file")
    return value


def _check_role_arn(value: str) -> str:
    if not re.fullmatch(r"qcs::cam::uin/\d+:role(?:Name)?/[\w+=,.@/-]+", value):
        raise ValueError("expected qcs::cam::uin/<uin>:roleName/<name>")
    return value


_STALL_KEYS = {"running_seconds", "paused_seconds", "repeat_seconds"}


def _check_stall_rules(value: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"<bucket>" | "tag:<tag>" | "*": {"running_seconds": n, "paused_seconds": n, "repeat_seconds": n}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, rule in value.items():
        if not isinstance(rule, dict):
            raise ValueError(f"rule {key!r}: expected an object of thresholds")
        unknown = set(rule) - _STALL_KEYS
        if unknown:
            raise ValueError(f"rule {key!r}: unknown keys {sorted(unknown)}, expected {sorted(_STALL_KEYS)}")
        checked: dict[str, float] = {}
        for k, v in rule.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 30 * 86400:
                raise ValueError(f"rule {key!r}: {k}={v!r} must be a number of seconds in (0, 2592000]")
            checked[k] = float(v)
        out[str(key)] = checked
    return out


# --- the table ----------------------------------------------------------------------------------------------

def _d(name: str, kind: Kind, default: Any, doc: str, **kw: Any) -> SettingDef:
    return SettingDef(name=name, attr=name[len(ENV_PREFIX):].lower(), kind=kind, default=default, doc=doc, **kw)


S, I, F, B, D, E, L, X, J = (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.DURATION, Kind.ENUM, Kind.LIST,
                             Kind.SECRET, Kind.JSON)

SETTINGS: tuple[SettingDef, ...] = (
    # Store
    _d("JOBWATCH_STORE_URL", S, None,
       "Where job state, history and the outbox live: `sqlite:///path` or "
       "`mysql://user:password@host:port/db` (TencentDB; the password is treated as a secret). Unset: SQLite "
       "in the user's state directory, or on SCF in `/tmp` (lost when the instance is recycled: a warning is "
       "logged; use MySQL there).",
       check=_check_store_url, sensitive=True,
       default_doc="`$XDG_STATE_HOME/ci-jobwatch/jobwatch.db` (`~/.local/state/...`); on SCF `/tmp/jobwatch.db`"),
    # CI service access
    _d("JOBWATCH_CI_ENDPOINT", S, None,
       "Override of the CI endpoint (`https://host[:port]`), e.g. the local emulator; unset = the real "
       "`<bucket>.ci.<region>.myqcloud.com`.", check=_check_url),
    _d("JOBWATCH_VERIFY_TLS", B, True, "Verify TLS certificates of the CI, STS and sink endpoints."),
    _d("JOBWATCH_SECRET_ID", S, None,
       "Explicit SecretId. Prefer the function's execution role, which SCF passes as temporary keys."),
    _d("JOBWATCH_SECRET_KEY", X, None, "Explicit SecretKey, paired with `JOBWATCH_SECRET_ID`."),
    _d("JOBWATCH_SESSION_TOKEN", X, None, "Session token for temporary explicit keys."),
    _d("JOBWATCH_CREDENTIALS_PROFILE", S, None,
       "Path of a credentials file (tencentcloud-sdk-python profile format) for CLI use.", check=_check_file),
    _d("JOBWATCH_ROLE_ARN", S, None,
       "Role to assume through STS (`qcs::cam::uin/<uin>:roleName/<name>`), e.g. to reach another account's "
       "buckets.", check=_check_role_arn),
    _d("JOBWATCH_ROLE_SESSION_NAME", S, "ci-jobwatch", "Session name used when assuming `JOBWATCH_ROLE_ARN`.",
       check=lambda v: v if re.fullmatch(r"[\w+=,.@-]{2,128}", v) else _fail("expected 2-128 of [A-Za-z0-9_+=,.@-]")),
    _d("JOBWATCH_ROLE_DURATION", I, 7200, "Lifetime in seconds of assumed-role credentials.",
       minimum=900, maximum=43200),
    _d("JOBWATCH_STS_ENDPOINT", S, None, "Override of the STS endpoint (tests).", check=_check_url),
    _d("JOBWATCH_SIGN_WINDOW", I, 600, "Validity in seconds of each COS request signature.",
       minimum=60, maximum=3600),
    # HTTP
    _d("JOBWATCH_HTTP_CONNECT_TIMEOUT", D, 3.05, "Connect timeout in seconds for CI requests.",
       minimum=0.1, maximum=60),
    _d("JOBWATCH_HTTP_READ_TIMEOUT", D, 10.0, "Read timeout in seconds for CI requests.", minimum=0.5, maximum=300),
    _d("JOBWATCH_HTTP_MAX_ATTEMPTS", I, 4, "Attempts per CI request, the first included.", minimum=1, maximum=10),
    _d("JOBWATCH_HTTP_POOL_SIZE", I, 32, "Pooled connections per host.", minimum=1, maximum=256),
    # Engine
    _d("JOBWATCH_CONCURRENCY", I, 32,
       "Most jobs polled in parallel within one invocation; halved while the service answers with throttling.",
       minimum=1, maximum=256),
    _d("JOBWATCH_LEASE_SECONDS", D, 120.0,
       "How long a claimed job (or notice) stays reserved to one instance; must outlast one poll with all its "
       "attempts and the pauses between them, and one notice send.", minimum=10, maximum=3600),
    _d("JOBWATCH_BATCH_SIZE", I, 200,
       "Most due jobs claimed per store round trip (fewer when the requests allowed could not start them all "
       "within one lease).", minimum=1, maximum=10000),
    _d("JOBWATCH_BULK_REFRESH", B, True,
       "Refresh a bucket's many due jobs by listing them (up to 100 per request) instead of one request per job; "
       "a few due jobs in a bucket are still queried one by one."),
    _d("JOBWATCH_POLL_MIN_SECONDS", D, 30.0, "Shortest interval between two polls of a job.",
       minimum=1, maximum=86400),
    _d("JOBWATCH_POLL_MAX_SECONDS", D, 900.0, "Longest interval between two polls of an unchanged job.",
       minimum=1, maximum=86400),
    _d("JOBWATCH_POLL_BACKOFF", F, 1.5, "Factor by which the interval grows while a job does not change.",
       minimum=1.0, maximum=10.0),
    _d("JOBWATCH_POLL_JITTER", F, 0.1, "Random fraction added to or taken from each interval.",
       minimum=0.0, maximum=0.5),
    _d("JOBWATCH_ERROR_BACKOFF_MAX_SECONDS", D, 1800.0, "Longest wait before re-polling a job whose polls fail.",
       minimum=1, maximum=86400),
    _d("JOBWATCH_CONFIRMATIONS", I, 2,
       "Consecutive identical observations needed before a terminal state is trusted.", minimum=1, maximum=10),
    _d("JOBWATCH_SAFETY_MARGIN_SECONDS", D, 5.0,
       "Time kept in reserve before the function's timeout to record results and return.", minimum=0, maximum=120),
    _d("JOBWATCH_DISCOVERY", L, (),
       "`region/bucket` pairs whose running jobs are found and tracked on each timer tick "
       "(comma-separated; empty = no discovery).", check=_check_discovery),
    _d("JOBWATCH_DEFAULT_REGION", S, None, "Region used when a request names none.", check=_check_region,
       fallback_env=("TENCENTCLOUD_REGION",)),
    _d("JOBWATCH_DEFAULT_BUCKET", S, None, "Bucket used when a request names none.", check=_check_bucket),
    # Notifications
    _d("JOBWATCH_NOTIFY", S, None,
       "Notification sinks (specs with their URLs and keys; the whole value is treated as a secret).",
       sensitive=True),
    _d("JOBWATCH_NOTIFY_TIMEOUT", D, 5.0, "Timeout in seconds of one delivery to a sink.", minimum=0.5, maximum=60),
    _d("JOBWATCH_NOTIFY_MAX_ATTEMPTS", I, 8, "Deliveries tried before a notice is dead-lettered.",
       minimum=1, maximum=100),
    _d("JOBWATCH_NOTIFY_BACKOFF_BASE", D, 30.0, "First retry delay in seconds of a failed delivery.",
       minimum=1, maximum=3600),
    _d("JOBWATCH_NOTIFY_BACKOFF_CAP", D, 3600.0, "Longest retry delay in seconds of a failed delivery.",
       minimum=1, maximum=86400),
    # Stall detection
    _d("JOBWATCH_STALL_RUNNING_SECONDS", D, 21600.0, "A job Running longer than this without progress is stalled.",
       minimum=60, maximum=30 * 86400),
    _d("JOBWATCH_STALL_PAUSED_SECONDS", D, 3600.0, "A job in Pause longer than this is stalled.",
       minimum=60, maximum=30 * 86400),
    _d("JOBWATCH_STALL_REPEAT_SECONDS", D, 21600.0, "Interval between repeated stall notices for one job.",
       minimum=60, maximum=30 * 86400),
    _d("JOBWATCH_STALL_RULES", J, {},
       'Per-bucket or per-tag overrides as JSON: `{"<bucket>" or "tag:<tag>": {"running_seconds": n, '
       '"paused_seconds": n, "repeat_seconds": n}}`.', check=_check_stall_rules),
    _d("JOBWATCH_CHILDREN", B, True,
       "Read each batch job's children (media jobs / workflow executions) for its progress and failed objects."),
    _d("JOBWATCH_CHILDREN_MAX_PAGES", I, 50,
       "Most child-list pages read per batch job per invocation (a large batch carries on next time).",
       minimum=1, maximum=10000),
    _d("JOBWATCH_CHILDREN_FAILED_THRESHOLD", F, 5.0,
       "Percent of finished children failed above which a `children_failed` notice is sent again (0: off).",
       minimum=0, maximum=100),
    _d("JOBWATCH_CHILDREN_FAILED_SAMPLE", I, 10, "Failed children listed in a notice (`failed_sample`).",
       minimum=0, maximum=100),
    _d("JOBWATCH_CHILDREN_FINAL_HOLD_SECONDS", D, 300.0,
       "Longest a batch's final notice waits for its children's final count (it is sent as soon as that is done).",
       minimum=0, maximum=86400),
    _d("JOBWATCH_RETENTION_DAYS", I, 30, "Days history and delivered notices are kept before `db purge`.",
       minimum=1, maximum=3650),
    # Logging
    _d("JOBWATCH_LOG_LEVEL", E, "info", "Lowest level logged.", choices=("debug", "info", "warning", "error")),
    _d("JOBWATCH_LOG_FORMAT", E, "auto",
       "`json` lines (what CLS indexes), `console` for people, or `auto`: console on a terminal, else json.",
       choices=("auto", "json", "console")),
    # API Gateway
    _d("JOBWATCH_API_KEY", X, None,
       "Key API Gateway callers send in `X-Api-Key`; unset = operator requests through API Gateway are refused."),
    # Fan-out
    _d("JOBWATCH_FANOUT", B, False,
       "Let a timer invocation hand surplus due jobs to asynchronous invocations of this function."),
    _d("JOBWATCH_FANOUT_SHARD_SIZE", I, 200, "Job keys per fan-out invocation.", minimum=1, maximum=5000),
    _d("JOBWATCH_FANOUT_MAX_SHARDS", I, 20, "Most fan-out invocations started by one tick.", minimum=1, maximum=1000),
    _d("JOBWATCH_SCF_ENDPOINT", S, None, "Override of the SCF API endpoint used by fan-out (tests).",
       check=_check_url),
    _d("JOBWATCH_FUNCTION_NAME", S, None,
       "This function's name, for fan-out invocations; defaults to SCF's `SCF_FUNCTIONNAME`.",
       fallback_env=("SCF_FUNCTIONNAME",)),
    _d("JOBWATCH_FUNCTION_NAMESPACE", S, None,
       "Namespace of the function fan-out invokes; unset = the invocation's own (the context's `namespace`, "
       "else `$SCF_NAMESPACE`, else `default`)."),
    _d("JOBWATCH_FUNCTION_QUALIFIER", S, None,
       "Version or alias fan-out invokes; unset = the invocation's own version (the context's "
       "`function_version`).", check=lambda v: v if re.fullmatch(r"\$LATEST|\d{1,10}|[A-Za-z][\w-]{0,59}", v)
       else _fail("expected $LATEST, a version number or an alias name")),
    # The file itself
    _d("JOBWATCH_CONFIG_FILE", S, None,
       "Optional TOML file of settings (keys are the lower-case names without `JOBWATCH_`); variables win."),
)

BY_NAME: dict[str, SettingDef] = {s.name: s for s in SETTINGS}
BY_ATTR: dict[str, SettingDef] = {s.attr: s for s in SETTINGS}


def _fail(reason: str) -> Any:
    raise ValueError(reason)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one process. Built only by :func:`load_settings`."""

    store_url: Secret
    ci_endpoint: str | None
    verify_tls: bool
    secret_id: str | None
    secret_key: Secret | None
    session_token: Secret | None
    credentials_profile: str | None
    role_arn: str | None
    role_session_name: str
    role_duration: int
    sts_endpoint: str | None
    sign_window: int
    http_connect_timeout: float
    http_read_timeout: float
    http_max_attempts: int
    http_pool_size: int
    concurrency: int
    lease_seconds: float
    batch_size: int
    bulk_refresh: bool
    poll_min_seconds: float
    poll_max_seconds: float
    poll_backoff: float
    poll_jitter: float
    error_backoff_max_seconds: float
    confirmations: int
    safety_margin_seconds: float
    discovery: tuple[tuple[str, str], ...]
    default_region: str | None
    default_bucket: str | None
    notify: Secret | None
    notify_timeout: float
    notify_max_attempts: int
    notify_backoff_base: float
    notify_backoff_cap: float
    stall_running_seconds: float
    stall_paused_seconds: float
    stall_repeat_seconds: float
    stall_rules: dict[str, dict[str, float]]
    children: bool
    children_max_pages: int
    children_failed_threshold: float
    children_failed_sample: int
    children_final_hold_seconds: float
    retention_days: int
    log_level: str
    log_format: str
    api_key: Secret | None
    fanout: bool
    fanout_shard_size: int
    fanout_max_shards: int
    scf_endpoint: str | None
    function_name: str | None
    function_namespace: str | None
    function_qualifier: str | None
    config_file: str | None

    @property
    def store_url_display(self) -> str:
        """The store URL with its password masked: for status output and logs."""
        return _mask_store_url(self.store_url.reveal())

    def display(self) -> dict[str, Any]:
        """Every setting by variable name, secrets masked: for ``jobwatch config show``."""
        out: dict[str, Any] = {}
        for d in SETTINGS:
            v = getattr(self, d.attr)
            if d.attr == "store_url":
                v = self.store_url_display
            elif d.secret:
                v = None if v is None else "***"
            out[d.name] = v
        return out


# --- parsing ------------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _number(raw: Any, integer: bool) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(raw, (int, float)):
        value = raw
    else:
        text = str(raw).strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise ValueError("expected an integer" if integer else "expected a number") from None
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected an integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite number")
    return int(value) if integer else float(value)


def _parse(d: SettingDef, raw: Any) -> Any:
    """Turn a raw value (a variable's string, or a typed TOML value) into the setting's type, or raise."""
    k = d.kind
    if k in (Kind.STR, Kind.SECRET, Kind.ENUM):
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        value: Any = raw.strip()
        if k is Kind.ENUM:
            value = value.lower()
            if value not in d.choices:
                raise ValueError("expected one of " + ", ".join(d.choices))
        elif k is Kind.SECRET:
            value = Secret(value)
    elif k is Kind.BOOL:
        if isinstance(raw, bool):
            value = raw
        elif str(raw).strip().lower() in _TRUE:
            value = True
        elif str(raw).strip().lower() in _FALSE:
            value = False
        else:
            raise ValueError("expected true or false")
    elif k is Kind.INT:
        value = _number(raw, integer=True)
    elif k is Kind.FLOAT:
        value = _number(raw, integer=False)
    elif k is Kind.DURATION:
        if isinstance(raw, str):
            m = _DURATION_RE.match(raw)
            if not m:
                raise ValueError("expected seconds, or a number with a unit: 90, 1.5, 90s, 15m, 2h, 1d")
            value = float(m.group(1)) * _UNIT[(m.group(2) or "s").lower()]
        else:
            value = _number(raw, integer=False)
    elif k is Kind.LIST:
        if isinstance(raw, str):
            value = tuple(p for p in re.split(r"[,\s]+", raw) if p)
        elif isinstance(raw, list) and all(isinstance(p, str) for p in raw):
            value = tuple(p.strip() for p in raw if p.strip())
        else:
            raise ValueError("expected a list of strings")
    elif k is Kind.JSON:
        if isinstance(raw, str):
            try:
                value = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
        else:
            value = raw
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
    else:  # pragma: no cover - every kind is handled above
        raise AssertionError(k)
    if d.minimum is not None and value < d.minimum or d.maximum is not None and value > d.maximum:
        raise ValueError(f"must be between {_fmt(d.minimum)} and {_fmt(d.maximum)}")
    if d.check is not None:
        checked = d.check(value.reveal() if isinstance(value, Secret) else value)
        value = checked if checked is not None else value
    return value


def _fmt(n: float | None) -> str:
    return "-" if n is None else (str(int(n)) if float(n).is_integer() else str(n))


def _shown(d: SettingDef, raw: Any) -> str:
    """The bad value as a message may show it: secrets never, a store URL without its password."""
    if d.attr == "store_url" and isinstance(raw, str):
        return repr(_mask_store_url(raw))
    if d.secret:
        return f"<secret, {len(str(raw))} characters>"
    text = repr(raw)
    return text if len(text) <= 120 else text[:117] + "..."


def read_toml(path: str) -> dict[str, Any]:
    """Read the TOML settings file: top-level keys, or a ``[jobwatch]`` table, named by attribute."""
    with open(os.path.expanduser(path), "rb") as fh:
        data = _toml.load(fh)
    table = data.get("jobwatch", data)
    return dict(table) if isinstance(table, dict) else {}


def _unknown_problem(name: str, known: list[str], where: str) -> str:
    close = closest(name, known, cutoff=0.75)
    hint = f" (did you mean {close}?)" if close else ""
    return f"{name}: unknown {where}{hint}"


def _collect(environ: Mapping[str, str], toml_path: str | None) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    values: dict[str, Any] = {}
    # 1. the file, if any (named by argument, or by the variable)
    file_values: dict[str, Any] = {}
    path = toml_path or (environ.get("JOBWATCH_CONFIG_FILE") or "").strip() or None
    if path:
        try:
            file_values = read_toml(path)
        except FileNotFoundError:
            problems.append(f"JOBWATCH_CONFIG_FILE={path!r}: no such file")
        except (OSError, _toml.TOMLDecodeError) as exc:
            problems.append(f"JOBWATCH_CONFIG_FILE={path!r}: cannot read TOML ({exc})")
    for key in sorted(file_values):
        attr = key.lower()
        if attr.startswith(ENV_PREFIX.lower()):
            attr = attr[len(ENV_PREFIX):]
        if attr not in BY_ATTR or attr == "config_file":
            problems.append(_unknown_problem(key, sorted(BY_ATTR), f"key in {path}"))
    # 2. each setting: variable, else fallback variables, else file, else default
    for d in SETTINGS:
        raw: Any = None
        origin = d.name
        v = environ.get(d.name)
        if v is not None and v.strip() != "":
            raw = v
        else:
            for fb in d.fallback_env:
                if (environ.get(fb) or "").strip():
                    raw, origin = environ[fb], f"{d.name} (from {fb})"
                    break
            else:
                for key in (d.attr, d.name, d.name.lower()):
                    if key in file_values and d.attr != "config_file":
                        raw, origin = file_values[key], f"{d.name} ({key} in {path})"
                        break
        if d.attr == "config_file" and toml_path and raw is None:
            raw = toml_path
        if raw is None:
            # Defaults are valid by construction (a unit test parses each); only the store URL needs wrapping.
            values[d.attr] = _check_store_url(default_store_url(environ)) if d.attr == "store_url" else d.default
            continue
        try:
            value = _parse(d, raw)
            if d.sensitive and not isinstance(value, Secret):
                value = Secret(value)
            values[d.attr] = value
        except ValueError as exc:
            problems.append(f"{origin}={_shown(d, raw)}: {exc}")
            values[d.attr] = None
    # 3. unknown JOBWATCH_* variables: typos would otherwise be silently ignored
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in BY_NAME and not name.startswith(RESERVED_PREFIXES):
            problems.append(_unknown_problem(name, sorted(BY_NAME), "variable"))
    problems.extend(_cross_checks(values))
    return values, problems


def _cross_checks(v: dict[str, Any]) -> list[str]:
    """Rules between settings, checked only when each side parsed."""
    out: list[str] = []

    def both(a: str, b: str) -> bool:
        return v.get(a) is not None and v.get(b) is not None

    if both("poll_min_seconds", "poll_max_seconds") and v["poll_min_seconds"] > v["poll_max_seconds"]:
        out.append(f"JOBWATCH_POLL_MIN_SECONDS={_fmt(v['poll_min_seconds'])} is above "
                   f"JOBWATCH_POLL_MAX_SECONDS={_fmt(v['poll_max_seconds'])}")
    if both("notify_backoff_base", "notify_backoff_cap") and v["notify_backoff_base"] > v["notify_backoff_cap"]:
        out.append(f"JOBWATCH_NOTIFY_BACKOFF_BASE={_fmt(v['notify_backoff_base'])} is above "
                   f"JOBWATCH_NOTIFY_BACKOFF_CAP={_fmt(v['notify_backoff_cap'])}")
    if bool(v.get("secret_id")) != bool(v.get("secret_key")):
        have, missing = (("JOBWATCH_SECRET_ID", "JOBWATCH_SECRET_KEY") if v.get("secret_id")
                         else ("JOBWATCH_SECRET_KEY", "JOBWATCH_SECRET_ID"))
        out.append(f"{missing}: missing (required when {have} is set)")
    if v.get("session_token") and not v.get("secret_id"):
        out.append("JOBWATCH_SECRET_ID: missing (required when JOBWATCH_SESSION_TOKEN is set)")
    out.extend(_lease_checks(v))
    return out


def _lease_checks(v: dict[str, Any]) -> list[str]:
    """A lease must outlast what is done under it, or a second poller (drain) takes the job (notice) over
    mid-request: one CI request with all its attempts and the pauses between them, and one notice send. The
    engine and the outbox size their claims to the lease; these are the settings no claim size can save."""
    from jobwatch.app.outbox import Outbox
    from jobwatch.core.retry import Backoff, worst_case_seconds

    out: list[str] = []
    lease = v.get("lease_seconds")
    if lease is None:
        return out
    if all(v.get(k) is not None for k in ("http_connect_timeout", "http_read_timeout", "http_max_attempts")):
        pause = Backoff().cap  # the CI client's pause between attempts, at most (a Retry-After is capped there)
        worst = worst_case_seconds(v["http_connect_timeout"], v["http_read_timeout"], v["http_max_attempts"],
                                   Backoff())
        if worst >= lease:
            out.append(f"JOBWATCH_LEASE_SECONDS={_fmt(lease)} must exceed one poll's worst case "
                       f"((connect {_fmt(v['http_connect_timeout'])} + read {_fmt(v['http_read_timeout'])}) x "
                       f"{v['http_max_attempts']} attempts + {v['http_max_attempts'] - 1} pauses of up to "
                       f"{_fmt(pause)} s = {_fmt(round(worst, 2))} s): lower JOBWATCH_HTTP_MAX_ATTEMPTS or the "
                       "timeouts, or raise the lease")
    timeout = v.get("notify_timeout")
    if timeout is not None and timeout + Outbox.safety_margin >= lease:
        out.append(f"JOBWATCH_LEASE_SECONDS={_fmt(lease)} must exceed one notice send "
                   f"(JOBWATCH_NOTIFY_TIMEOUT={_fmt(timeout)} + {_fmt(Outbox.safety_margin)} s of margin)")
    return out


def load_settings(environ: Mapping[str, str] | None = None, toml_path: str | None = None) -> Settings:
    """Read, convert and check every setting; raise :class:`ConfigError` listing every problem at once."""
    values, problems = _collect(os.environ if environ is None else environ, toml_path)
    if problems:
        raise ConfigError(problems)
    return Settings(**values)


@dataclass(frozen=True)
class Needed:
    """An optional dependency group (``pip install 'ci-jobwatch[<extra>]'``) the configuration needs, the modules
    it provides, and which setting asks for it."""

    extra: str
    modules: tuple[str, ...]
    reason: str


def needed_extras(environ: Mapping[str, str] | None = None, toml_path: str | None = None) -> list[Needed]:
    """The extras this configuration needs: the store's driver, fan-out's SDK, each configured sink's SDK.
    Judged from the values alone (bad values are left to :func:`check_environment`), so `jobwatch package` can
    use it on a deploy's variables."""
    values, _ = _collect(os.environ if environ is None else environ, toml_path)
    return _needed(values)


def _needed(values: Mapping[str, Any]) -> list[Needed]:
    out: list[Needed] = []
    url = values.get("store_url")
    if isinstance(url, Secret) and url.reveal().partition("://")[0].lower() in ("mysql", "mysql+pymysql"):
        from jobwatch.store.mysql import MysqlStore

        out.append(Needed(MysqlStore.extra, MysqlStore.modules, "JOBWATCH_STORE_URL (a MySQL store)"))
    if values.get("fanout"):
        from jobwatch.app import fanout

        out.append(Needed(fanout.EXTRA, fanout.MODULES, "JOBWATCH_FANOUT"))
    notify = values.get("notify")
    if isinstance(notify, Secret) and notify.reveal().strip():
        from jobwatch.notify.spec import sink_class, split_specs

        for i, spec in enumerate(split_specs(notify.reveal()), start=1):
            cls = sink_class(spec)
            if cls is not None and cls.extra:
                out.append(Needed(cls.extra, cls.modules, f"JOBWATCH_NOTIFY sink #{i} ({cls.kind})"))
    return out


def missing_modules(needed: list[Needed]) -> list[str]:
    """A problem for each needed module that does not import here, naming the extra that provides it."""
    import importlib

    problems: list[str] = []
    for n in needed:
        for module in n.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                problems.append(f"{n.reason} needs the module {exc.name or module}, which is not installed: "
                                f"add the '{n.extra}' extra (pip install 'ci-jobwatch[{n.extra}]'; "
                                f"`jobwatch package` adds it when the configuration it reads needs it)")
                break
    return problems


def check_environment(environ: Mapping[str, str] | None = None, toml_path: str | None = None) -> list[str]:
    """Every problem of this environment (empty when it is valid): what ``jobwatch config check`` prints.

    Beyond :func:`load_settings`, this also builds the notification sinks, so a bad ``JOBWATCH_NOTIFY`` spec is
    listed with the rest (the notify package words its problems without the secrets), and imports the modules of
    every optional part the configuration uses (a sink's SDK, the MySQL driver, fan-out's SDK), so a missing
    extra is found here rather than as dead letters. Those imports are heavy, hence only here and not on the
    function's start-up path.
    """
    values, problems = _collect(os.environ if environ is None else environ, toml_path)
    notify = values.get("notify")
    if isinstance(notify, Secret) and notify.reveal().strip():
        from jobwatch.notify import parse_sinks  # lazy: requests and the Tencent Cloud SDK

        try:
            parse_sinks(notify.reveal())
        except ConfigError as exc:
            problems.extend(f"JOBWATCH_NOTIFY: {p}" for p in exc.problems)
    problems.extend(missing_modules(_needed(values)))
    return problems


# --- documentation ------------------------------------------------------------------------------------------

def _default_text(d: SettingDef) -> str:
    if d.default_doc:
        return d.default_doc
    if d.fallback_env and d.default is None:
        return "`$" + "`, `$".join(d.fallback_env) + "`"
    if d.default is None or d.default == () or d.default == {}:
        return "-"
    if isinstance(d.default, bool):
        return "`true`" if d.default else "`false`"
    if isinstance(d.default, float):
        return f"`{_fmt(d.default)}`"
    return f"`{d.default}`"


def _type_text(d: SettingDef) -> str:
    if d.kind is Kind.ENUM:
        return " \\| ".join(d.choices)
    text = {Kind.DURATION: "seconds"}.get(d.kind, d.kind.value)
    if d.minimum is not None or d.maximum is not None:
        text += f" {_fmt(d.minimum)}..{_fmt(d.maximum)}"
    if d.sensitive:
        text += " (secret)"
    return text


def render_markdown_table() -> str:
    """The README's configuration table, generated from :data:`SETTINGS`."""
    lines = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for d in SETTINGS:
        doc = d.doc.replace("|", "\\|")
        lines.append(f"| `{d.name}` | {_type_text(d)} | {_default_text(d)} | {doc} |")
    return "\n".join(lines) + "\n"


README_START = "<!-- config-table:start -->"
README_END = "<!-- config-table:end -->"


def readme_block(readme_text: str) -> str | None:
    """The text between the README's table markers, or ``None`` when the markers are missing."""
    start, end = readme_text.find(README_START), readme_text.find(README_END)
    if start < 0 or end < start:
        return None
    return readme_text[start + len(README_START):end].strip("\n") + "\n"


def update_readme(readme_text: str) -> str:
    """The README with the block between the markers replaced by the current table."""
    start, end = readme_text.find(README_START), readme_text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} block")
    return (readme_text[: start + len(README_START)] + "\n" + render_markdown_table()
            + readme_text[end:])
