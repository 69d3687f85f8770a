"""Stall rules: when a job that is still Submitted, Running or Paused deserves a "stalled" notice.

Thresholds come from global defaults, overridden per bucket and then per tag (tags name teams and pipelines,
which know their own jobs best). Each field is merged on its own, so a bucket can change only ``running``. When
several tag rules match, the shortest threshold wins: an alert that comes early is better than one that never
comes. :func:`evaluate_stall` is pure: the state machine gives it the times and stores what it returns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Mapping

from jobwatch.core.errors import ConfigError, ValidationError
from jobwatch.core.models import JobState, validate_bucket

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")
_UNIT = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
FIELDS = ("submitted", "running", "paused", "repeat")


def parse_duration(value: Any, *, field_name: str) -> timedelta | None:
    """Seconds as a number, or ``90s``/``30m``/``2h``/``1d``; ``off``/``none``/``null`` disable the rule."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none", "null", "")):
        return None
    if isinstance(value, bool):
        raise ValidationError(field_name, value, "expected seconds or a duration like 30m, 2h, 1d, or off")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DUR_RE.match(str(value))
        if not m:
            raise ValidationError(field_name, value, "expected seconds or a duration like 30m, 2h, 1d, or off")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds <= 0:
        raise ValidationError(field_name, value, "must be more than 0 (use off to disable)")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class StallThresholds:
    """How long a job may stay in a state before it is stalled; ``None`` disables. ``repeat``: the least time
    between two stalled notices for one job (``None``: notify once per stall)."""

    submitted: timedelta | None = timedelta(hours=1)
    running: timedelta | None = timedelta(hours=12)
    paused: timedelta | None = timedelta(hours=24)
    repeat: timedelta | None = timedelta(hours=6)

    def for_state(self, state: str) -> timedelta | None:
        st = JobState.parse(state)
        if st is JobState.SUBMITTED:
            return self.submitted
        if st is JobState.RUNNING:
            return self.running
        if st is JobState.PAUSE:
            return self.paused
        return None


@dataclass(frozen=True)
class StallOverride:
    """The fields an override sets; the others fall through to the wider rule."""

    values: Mapping[str, timedelta | None] = field(default_factory=dict)

    def apply(self, base: StallThresholds) -> StallThresholds:
        return replace(base, **dict(self.values)) if self.values else base


@dataclass(frozen=True)
class StallRules:
    default: StallThresholds = StallThresholds()
    buckets: Mapping[str, StallOverride] = field(default_factory=dict)
    tags: Mapping[tuple[str, str], StallOverride] = field(default_factory=dict)

    def for_job(self, bucket: str, tags: Mapping[str, str]) -> StallThresholds:
        t = self.default
        if bucket in self.buckets:
            t = self.buckets[bucket].apply(t)
        matched = [o for (k, v), o in sorted(self.tags.items()) if tags.get(k) == v] if self.tags else []
        if matched:
            merged: dict[str, timedelta | None] = {}
            for o in matched:
                for name, val in o.values.items():
                    if name not in merged:
                        merged[name] = val
                    else:
                        merged[name] = _shortest(merged[name], val)
            t = replace(t, **merged)
        return t

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | None = None, **plain: Any) -> "StallRules":
        """Rules from JSON text or a mapping, plus plain keyword values (``running="2h"``) that set the global
        defaults (e.g. from separate environment variables). Every problem is reported in one ConfigError.

        Shape: ``{"running": "12h", "submitted": "1h", "paused": "1d", "repeat": "6h",
        "buckets": {"<bucket>": {"running": "30m"}}, "tags": {"team:media": {"running": "4h"}}}``.
        A missing ``submitted`` follows ``running`` when only ``running`` is given."""
        problems: list[str] = []
        data: Mapping[str, Any]
        if value is None or value == "":
            data = {}
        elif isinstance(value, str):
            try:
                data = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError([f"stall rules: not JSON ({exc.msg} at position {exc.pos})"]) from None
        else:
            data = value
        if not isinstance(data, Mapping):
            raise ConfigError(["stall rules: expected a JSON object"])
        top = {k: v for k, v in data.items() if k not in ("buckets", "tags")}
        top.update({k: v for k, v in plain.items() if v is not None})
        base = _override(top, "stall", problems)
        vals = dict(base.values)
        if "running" in vals and "submitted" not in vals:
            vals["submitted"] = vals["running"]
        default = replace(StallThresholds(), **vals)
        buckets: dict[str, StallOverride] = {}
        for b, o in _mapping(data.get("buckets"), "stall.buckets", problems).items():
            try:
                validate_bucket(b)
            except ValidationError as exc:
                problems.append(f"stall.buckets: {exc}")
                continue
            buckets[b] = _override(o, f"stall.buckets.{b}", problems)
        tags: dict[tuple[str, str], StallOverride] = {}
        for t, o in _mapping(data.get("tags"), "stall.tags", problems).items():
            k, colon, v = str(t).partition(":")
            if not colon or not k:
                problems.append(f"stall.tags: invalid tag {t!r}: expected key:value")
                continue
            tags[(k, v)] = _override(o, f"stall.tags.{t}", problems)
        if problems:
            raise ConfigError(problems)
        return cls(default, buckets, tags)


def _shortest(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _mapping(value: Any, where: str, problems: list[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{where}: expected an object")
        return {}
    return value


def _override(data: Any, where: str, problems: list[str]) -> StallOverride:
    if not isinstance(data, Mapping):
        problems.append(f"{where}: expected an object")
        return StallOverride()
    values: dict[str, timedelta | None] = {}
    for k, v in data.items():
        if k not in FIELDS:
            problems.append(f"{where}: unknown field {k!r}; expected one of {', '.join(FIELDS)}")
            continue
        try:
            values[k] = parse_duration(v, field_name=f"{where}.{k}")
        except ValidationError as exc:
            problems.append(str(exc))
    return StallOverride(values)


@dataclass(frozen=True)
class StallDecision:
    """``stalled``: over its threshold now. ``notify``: raise a stalled notice now (first, or repeat due)."""

    stalled: bool
    notify: bool
    threshold: timedelta | None = None
    elapsed: timedelta | None = None


def evaluate_stall(
    state: str,
    since: datetime,
    now: datetime,
    last_stall_notice_at: datetime | None,
    bucket: str,
    tags: Mapping[str, str],
    rules: StallRules,
) -> StallDecision:
    """Decide for one active job. ``since`` is when it entered ``state``; a last notice from before ``since``
    belonged to an earlier stay and does not hold back the first notice of this one."""
    for name, dt in (("since", since), ("now", now), ("last_stall_notice_at", last_stall_notice_at)):
        if dt is not None and dt.tzinfo is None:
            raise ValidationError(name, dt.isoformat(), "expected an aware datetime (with a UTC offset)")
    thresholds = rules.for_job(bucket, tags)
    limit = thresholds.for_state(state)
    elapsed = now - since
    if limit is None or elapsed < limit:
        return StallDecision(False, False, limit, elapsed)
    last = last_stall_notice_at if last_stall_notice_at is not None and last_stall_notice_at >= since else None
    if last is None:
        return StallDecision(True, True, limit, elapsed)
    repeat = thresholds.repeat
    due = repeat is not None and now - last >= repeat
    return StallDecision(True, due, limit, elapsed)
