"""Human-readable forms of a notice for chat robots and email: title, markdown, plain text, template fields.

People read these on a phone: the first line says what happened to which job, then bucket, the move from old
to new state, how long the job ran, and on failure the service's code and message. Text that came from the
service or a job name is escaped per flavour, so a job called ``*x*`` cannot restyle or break a message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobwatch.core.models import Notice, NoticeKind, from_iso
from jobwatch.core.progress import duration_text

MAX_MESSAGE = 500  # characters of the service's error message we show
MAX_TOTAL = 3000
MAX_FAILED_SHOWN = 3  # failed objects named in a chat message (the rest: `jobwatch children --failed`)  # Slack sections take 3,000 characters; WeCom 4,096 bytes of markdown

_ICON = {"Success": "✅", "Failed": "❌", "Cancel": "⛔", "vanished": "❓", "stalled": "⏳", "recovered": "▶️",
         "test": "🔔"}


def ran_for(notice: Notice) -> float | None:
    """Seconds from the job's start (or creation) to its end (or the time of the notice)."""
    job = notice.job or {}
    try:
        start = from_iso(job.get("started_at")) or from_iso(job.get("created_at"))
        end = from_iso(job.get("ended_at")) or notice.observed_at
    except (TypeError, ValueError):
        return None
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None):
        return None
    return (end - start).total_seconds()


def fields(notice: Notice) -> dict[str, Any]:
    """The facts every rendering shows, as plain strings (also the SES template's data)."""
    job = notice.job or {}
    message = job.get("message") or ""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    failed = notice.outcome in ("Failed", "Cancel") or bool(job.get("code") and job.get("code") != "Success")
    return {
        "title": title(notice),
        "outcome": notice.outcome,
        "kind": notice.kind.value,
        "job_name": job.get("name") or "",
        "job_id": notice.key.job_id,
        "bucket": notice.key.bucket,
        "region": notice.key.region,
        "from_state": notice.from_state or "",
        "to_state": notice.to_state or "",
        "ran_for": duration_text(ran_for(notice)) or "",
        "code": (job.get("code") or "") if failed else "",
        "message": message if failed else "",
        "observed_at": _fmt_time(notice.observed_at),
        "tags": ", ".join(f"{k}={v}" for k, v in sorted(notice.tags.items())),
        "key": notice.idempotency_key,
        "progress": progress_text(notice),
        "failed_objects": ", ".join(f"{o} ({c})" if c else o for o, c in failed_objects(notice)),
    }


def progress_text(notice: Notice) -> str:
    """``11,960 / 12,000 done, 40 failed`` from a batch notice's progress (empty when it has none)."""
    p = (notice.detail or {}).get("progress")
    if not isinstance(p, dict) or not isinstance(p.get("total"), int) or not p["total"]:
        return ""
    n: dict[str, int] = {k: v if isinstance(v := p.get(k), int) else 0 for k in ("succeeded", "failed", "cancelled")}
    out = f"{n['succeeded'] + n['failed'] + n['cancelled']:,} / {p['total']:,} done"
    if n["failed"]:
        out += f", {n['failed']:,} failed"
    if n["cancelled"]:
        out += f", {n['cancelled']:,} cancelled"
    return out


def failed_objects(notice: Notice, limit: int = MAX_FAILED_SHOWN) -> list[tuple[str, str]]:
    """The first few failed objects of a batch notice, as (object or child ID, error code), cut to fit."""
    sample = (notice.detail or {}).get("failed_sample")
    out: list[tuple[str, str]] = []
    for item in sample if isinstance(sample, list) else []:
        if not isinstance(item, dict):
            continue
        if len(out) >= limit:
            break
        name = str(item.get("object") or item.get("child_id") or "?")
        out.append((name if len(name) <= 120 else "…" + name[-119:], str(item.get("code") or "")[:64]))
    return out


def title(notice: Notice) -> str:
    job = notice.job or {}
    label = job.get("name") or notice.key.job_id
    what = {
        NoticeKind.TRANSITION: notice.to_state or "changed",
        NoticeKind.VANISHED: "vanished",
        NoticeKind.STALLED: f"stalled in {notice.to_state or notice.from_state or '?'}",
        NoticeKind.RECOVERED: f"moving again ({notice.to_state or '?'})",
        NoticeKind.TEST: "test notice from ci-jobwatch",
        NoticeKind.CHILDREN_FAILED: _children_failed_what(notice),
    }[notice.kind]
    return f"{_ICON.get(notice.outcome, 'ℹ️')} Job {label}: {what}"


def _children_failed_what(notice: Notice) -> str:
    p = (notice.detail or {}).get("progress") or {}
    failed = p.get("failed")
    return f"{failed:,} failed objects" if isinstance(failed, int) else "objects failed"


def markdown(notice: Notice, *, flavour: str = "md", with_title: bool = True) -> str:
    """Markdown for WeCom/DingTalk/Feishu (``md``) or Slack mrkdwn (``slack``); Feishu shows the title in the
    card header, hence ``with_title=False``."""
    f = fields(notice)
    esc = _escape_slack if flavour == "slack" else _escape_md
    b = "*" if flavour == "slack" else "**"
    head = f"{b}{esc(f['title'])}{b}" if flavour == "slack" else f"### {esc(f['title'])}"
    lines = [head] if with_title else []
    name = f"{esc(f['job_name'])} (`{f['job_id']}`)" if f["job_name"] else f"`{f['job_id']}`"
    lines.append(f"{b}Job:{b} {name}")
    lines.append(f"{b}Bucket:{b} {esc(f['bucket'])} ({esc(f['region'])})")
    if f["from_state"] or f["to_state"]:
        arrow = "-&gt;" if flavour == "slack" else "->"
        lines.append(f"{b}State:{b} {esc(f['from_state'] or '-')} {arrow} {esc(f['to_state'] or '-')}")
    if f["ran_for"]:
        lines.append(f"{b}Ran for:{b} {f['ran_for']}")
    if f["code"] or f["message"]:
        lines.append(f"{b}Error:{b} {esc(f['code'])} {esc(f['message'])}".rstrip())
    if f["progress"]:
        lines.append(f"{b}Progress:{b} {esc(f['progress'])}")
    shown = failed_objects(notice)
    if shown:
        more = _more_failed(notice, len(shown))
        objs = ", ".join(f"`{o.replace('`', '')}`" + (f" ({esc(c)})" if c else "") for o, c in shown)
        lines.append(f"{b}Failed objects:{b} {objs}{more}")
    if f["tags"]:
        lines.append(f"{b}Tags:{b} {esc(f['tags'])}")
    lines.append(f"{b}At:{b} {f['observed_at']}  ·  key `{f['key'].replace('`', '')}`")
    text = "\n".join(lines) if flavour == "slack" else "\n\n".join(lines)
    return text[:MAX_TOTAL]


def text(notice: Notice) -> str:
    """Plain text (email fallback, logs)."""
    f = fields(notice)
    lines = [f["title"], f"Job: {f['job_name']} ({f['job_id']})".replace(" ()", ""),
             f"Bucket: {f['bucket']} ({f['region']})"]
    if f["from_state"] or f["to_state"]:
        lines.append(f"State: {f['from_state'] or '-'} -> {f['to_state'] or '-'}")
    if f["ran_for"]:
        lines.append(f"Ran for: {f['ran_for']}")
    if f["code"] or f["message"]:
        lines.append(f"Error: {f['code']} {f['message']}".rstrip())
    if f["progress"]:
        lines.append(f"Progress: {f['progress']}")
    if f["failed_objects"]:
        lines.append(f"Failed objects: {f['failed_objects']}{_more_failed(notice, len(failed_objects(notice)))}")
    if f["tags"]:
        lines.append(f"Tags: {f['tags']}")
    lines.append(f"At: {f['observed_at']}  key {f['key']}")
    return "\n".join(lines)[:MAX_TOTAL]


def _more_failed(notice: Notice, shown: int) -> str:
    p = (notice.detail or {}).get("progress") or {}
    failed = p.get("failed") if isinstance(p, dict) else None
    return f" and {failed - shown:,} more" if isinstance(failed, int) and failed > shown else ""


def _fmt_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S %z").strip()


def _escape_md(s: str) -> str:
    for ch in ("\\", "`", "*", "_", "[", "]", "<", ">", "#"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def _escape_slack(s: str) -> str:
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in ("*", "_", "`", "~"):
        s = s.replace(ch, "\u200b" + ch + "\u200b")  # break the emphasis pair without a visible change
    return s.replace("\n", " ")
