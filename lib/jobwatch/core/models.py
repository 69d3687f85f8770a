"""Typed records for CI batch jobs, and the input checks that run before any URL is built."""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from jobwatch.core.errors import ValidationError


class JobState(str, enum.Enum):
    """A batch job's state as the service reports it, plus ``UNKNOWN`` for states added after this code."""

    SUBMITTED = "Submitted"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    PAUSE = "Pause"
    CANCEL = "Cancel"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, raw: str) -> "JobState":
        try:
            return cls(raw)
        except ValueError:
            return cls.UNKNOWN

# COS bucket names are lower-case letters, digits and '-', followed by '-<APPID>'; 50 characters in all.
_BUCKET_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?-[0-9]{5,12}\Z")
# ap-beijing, ap-beijing-fsi, na-siliconvalley, eu-frankfurt, ap-shanghai-adc ...
_REGION_RE = re.compile(r"^[a-z]{2,8}(?:-[a-z0-9]{2,20}){1,3}\Z")
# Job IDs seen are a letter and 32 hex digits; allow letters, digits, '-' and '_' only, never a path or host char.
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")


def validate_bucket(bucket: Any) -> str:
    if not isinstance(bucket, str) or len(bucket) > 50 or not _BUCKET_RE.match(bucket):
        raise ValidationError("bucket", bucket, "expected <name>-<APPID>, lower-case letters, digits and '-'")
    return bucket


def validate_region(region: Any) -> str:
    if not isinstance(region, str) or not _REGION_RE.match(region):
        raise ValidationError("region", region, "expected a region such as ap-guangzhou")
    return region


# Regions where COS, and with it Cloud Infinite, serves buckets (Tencent's COS "Regions and Access Endpoints",
# financial-cloud and autonomous-driving regions included). No Tencent page confirms CI's own list region by
# region, so a well-formed name outside it is used with a warning (core/regions), never refused.
CI_REGIONS = frozenset({
    "ap-beijing", "ap-nanjing", "ap-shanghai", "ap-guangzhou", "ap-chengdu", "ap-chongqing",
    "ap-beijing-fsi", "ap-shanghai-fsi", "ap-shenzhen-fsi", "ap-shanghai-adc",
    "ap-hongkong", "ap-singapore", "ap-jakarta", "ap-seoul", "ap-bangkok", "ap-tokyo", "ap-mumbai",
    "na-siliconvalley", "na-ashburn", "na-toronto", "sa-saopaulo", "eu-frankfurt", "eu-moscow",
})


def validate_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise ValidationError("job_id", job_id, "expected letters, digits, '-' or '_' (1-128 characters)")
    return job_id


@dataclass(frozen=True, order=True)
class JobKey:
    """Identity of a tracked job. Validated on construction, so a key is always safe to put in a URL."""

    region: str
    bucket: str
    job_id: str

    def __post_init__(self) -> None:
        validate_region(self.region)
        validate_bucket(self.bucket)
        validate_job_id(self.job_id)

    def __str__(self) -> str:
        return f"{self.region}/{self.bucket}/{self.job_id}"

    @classmethod
    def trusted(cls, region: str, bucket: str, job_id: str) -> "JobKey":
        """A key read back from our own store, where only validated keys are written: built without the
        validation (a bulk claim reads back thousands; the three checks were a fifth of a row's cost)."""
        new = object.__new__(cls)
        new.__dict__.update(region=region, bucket=bucket, job_id=job_id)
        return new

    @classmethod
    def parse(cls, text: str) -> "JobKey":
        """Parse ``region/bucket/job_id`` (the form ``str()`` gives)."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) != 3:
            raise ValidationError("job_key", text, "expected region/bucket/job_id")
        return cls(*parts)


@dataclass(frozen=True)
class TimeInterval:
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class JobInput:
    """Where a batch job reads its objects from: exactly one of these is usually set."""

    prefix: str | None = None
    manifest: str | None = None
    url_file: str | None = None
    object: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobOperation:
    """What a batch job does. Workflow jobs name workflows; independent-node jobs name a tag and parameters."""

    workflow_ids: tuple[str, ...] = ()
    tag: str | None = None
    queue_id: str | None = None
    template_id: str | None = None
    job_param: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    time_interval: TimeInterval | None = None
    user_data: str | None = None
    callback: str | None = None
    job_level: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One batch job as last read from the service (both the ``Workflow`` and ``Job`` variants)."""

    job_id: str
    name: str | None
    type: str | None
    state: JobState
    state_raw: str
    code: str | None = None
    message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    input: JobInput = field(default_factory=JobInput)
    operation: JobOperation = field(default_factory=JobOperation)
    extra: dict[str, Any] = field(default_factory=dict)
    raw_xml: bytes = field(default=b"", repr=False, compare=False)
    # A digest of the answer's JobsDetail element: two answers with the same fingerprint are the same job, so a
    # steady bulk refresh can tell "unchanged" without parsing or re-serialising it (None: not read from XML).
    fingerprint: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form used by the CLI (``--json``), the store and notices."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "type": self.type,
            "state": self.state_raw,
            "code": self.code,
            "message": self.message,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "input": _input_json(self.input),
            "operation": _operation_json(self.operation),
            "extra": self.extra,
        }

    @classmethod
    def stub(cls, job_id: str, type: str | None, state_raw: str, created_at: datetime | None) -> "Job":
        """What a light claim knows of a job (ID, variant, state, creation time), built without ``__init__``;
        the empty input and operation are shared (frozen)."""
        new = object.__new__(cls)
        new.__dict__.update(_STUB_DEFAULTS, job_id=job_id, type=type, state=JobState.parse(state_raw),
                            state_raw=state_raw, created_at=created_at)
        return new

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Job":
        """Inverse of :meth:`to_json` (the raw XML is not kept in JSON)."""
        inp = data.get("input") or {}
        op = data.get("operation") or {}
        ti = op.get("time_interval")
        return cls(
            job_id=data["job_id"],
            name=data.get("name"),
            type=data.get("type"),
            state=JobState.parse(data.get("state") or ""),
            state_raw=data.get("state") or "",
            code=data.get("code"),
            message=data.get("message"),
            created_at=from_iso(data.get("created_at")),
            started_at=from_iso(data.get("started_at")),
            ended_at=from_iso(data.get("ended_at")),
            input=JobInput(
                prefix=inp.get("prefix"),
                manifest=inp.get("manifest"),
                url_file=inp.get("url_file"),
                object=inp.get("object"),
                extra=inp.get("extra") or {},
            ),
            operation=JobOperation(
                workflow_ids=tuple(op.get("workflow_ids") or ()),
                tag=op.get("tag"),
                queue_id=op.get("queue_id"),
                template_id=op.get("template_id"),
                job_param=op.get("job_param") or {},
                output=op.get("output") or {},
                time_interval=TimeInterval(from_iso(ti.get("start")), from_iso(ti.get("end"))) if ti else None,
                user_data=op.get("user_data"),
                callback=op.get("callback"),
                job_level=op.get("job_level"),
                extra=op.get("extra") or {},
            ),
            extra=data.get("extra") or {},
        )


@dataclass(frozen=True)
class QueryResult:
    """One answer of the query or list API."""

    jobs: list[Job]
    non_exist_ids: list[str] = field(default_factory=list)
    next_token: str | None = None
    request_id: str | None = None


_STUB_DEFAULTS: dict[str, Any] = dict(
    name=None, code=None, message=None, started_at=None, ended_at=None, input=JobInput(), operation=JobOperation(),
    extra={}, raw_xml=b"", fingerprint=None)


@dataclass(frozen=True)
class ListingPage:
    """One list page read for a bulk refresh: of the jobs asked about, those whose answer differs from the one
    recorded (parsed) and those whose answer is the recorded one byte for byte (only named); ``listed`` counts
    every job on the page, asked about or not."""

    changed: list[Job]
    unchanged: list[str]
    listed: int
    next_token: str | None = None
    request_id: str | None = None


def _input_json(i: JobInput) -> dict[str, Any]:
    return {"prefix": i.prefix, "manifest": i.manifest, "url_file": i.url_file, "object": i.object, "extra": i.extra}


def _operation_json(o: JobOperation) -> dict[str, Any]:
    return {
        "workflow_ids": list(o.workflow_ids),
        "tag": o.tag,
        "queue_id": o.queue_id,
        "template_id": o.template_id,
        "job_param": o.job_param,
        "output": o.output,
        "time_interval": (
            {"start": iso(o.time_interval.start), "end": iso(o.time_interval.end)} if o.time_interval else None
        ),
        "user_data": o.user_data,
        "callback": o.callback,
        "job_level": o.job_level,
        "extra": o.extra,
    }


_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?$"
)


@functools.lru_cache(maxsize=64)
def _zone(off: str | None) -> timezone:
    """The zone of an offset as written (``+0800``, ``+08:00``, ``Z``; none means +08:00). Cached: the service
    writes the same one or two offsets in every answer."""
    if off is None:
        return timezone(timedelta(hours=8))
    if off == "Z":
        return timezone.utc
    sign = -1 if off[0] == "-" else 1
    digits = off[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def parse_time(text: str | None, *, field_name: str = "time") -> datetime | None:
    """Parse the service's time forms into an aware datetime; ``-``, empty or ``None`` mean "not set".

    Accepts ``2022-06-27T15:23:10+0800``, ``+08:00``, ``Z``, a space instead of ``T``, and fractional seconds.
    A time with no offset is taken as China Standard Time (+08:00), the service's own zone.
    """
    if text is None:
        return None
    text = text.strip()
    if text in ("", "-"):
        return None
    m = _TIME_RE.match(text)
    if not m:
        raise ValidationError(field_name, text, "expected a time like 2022-06-27T15:23:10+0800")
    year, month, day, hour, minute, second, frac, off = m.groups()
    tz = _zone(off)
    micro = int((frac or "0").ljust(6, "0")[:6])
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    except ValueError as exc:
        raise ValidationError(field_name, text, str(exc)) from None


def format_ci_time(dt: datetime) -> str:
    """The service's own form, ``2022-06-27T15:23:10+0800``."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S%z")


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text)


class NoticeKind(str, enum.Enum):
    """Why a notice was raised."""

    TRANSITION = "transition"  # the job moved to another state (terminal or not)
    VANISHED = "vanished"  # the service no longer knows the job (confirmed NonExistJobIds)
    STALLED = "stalled"  # Submitted/Running/Paused longer than its threshold
    RECOVERED = "recovered"  # a stalled job moved again
    TEST = "test"  # `jobwatch notify test`
    CHILDREN_FAILED = "children_failed"  # a batch's first failed child, or its failed share passed the threshold


NOTICE_SCHEMA_VERSION = 1
DETAIL_KEYS = ("progress", "failed_sample", "failed_threshold")  # what Notice.detail may add to the payload


@dataclass(frozen=True)
class Notice:
    """A notice waiting in (or read from) the outbox. ``idempotency_key`` is stable across retries and crashes:
    receivers drop a repeat by it."""

    idempotency_key: str
    kind: NoticeKind
    key: JobKey
    from_state: str | None
    to_state: str | None
    observed_at: datetime
    job: dict[str, Any] | None = None  # Job.to_json() at the time of the notice
    tags: dict[str, str] = field(default_factory=dict)
    id: int | None = None
    # More payload keys for a batch job: "progress" (counts by state) and "failed_sample" (the first failed
    # children). A final notice's detail is filled in by the children refresh after the batch ended.
    detail: dict[str, Any] | None = None
    # Not sent before this time: a batch's final notice waits (at most this long) for its children's final count.
    not_before: datetime | None = None

    @property
    def outcome(self) -> str:
        """What routing filters match on: the new state for a transition (e.g. ``Failed``), else the kind."""
        if self.kind is NoticeKind.TRANSITION and self.to_state:
            return self.to_state
        return self.kind.value

    def payload(self) -> dict[str, Any]:
        """The documented, versioned JSON form sent by the webhook and EventBridge sinks."""
        return {
            "version": NOTICE_SCHEMA_VERSION,
            "id": self.idempotency_key,
            "kind": self.kind.value,
            "outcome": self.outcome,
            "region": self.key.region,
            "bucket": self.key.bucket,
            "job_id": self.key.job_id,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "observed_at": iso(self.observed_at),
            "tags": dict(self.tags),
            "job": self.job,
            **{k: v for k, v in (self.detail or {}).items() if k in DETAIL_KEYS},
        }
