"""The status page's HTML, written as plain strings with :func:`html.escape` on every value that comes from CI,
the store or the request (job names, tags and error messages are hostile input).

Every link is relative to the page it is on (``root`` is ``../`` per path segment below ``ui``), so the same HTML
works at ``/ui`` locally and at ``/release/ui`` (or any custom-domain mapping) behind API Gateway. No inline
script or style: the page runs under a strict Content-Security-Policy.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlencode

from jobwatch.app.views import JobDetail, Overview
from jobwatch.core.models import JobKey
from jobwatch.core.progress import Progress
from jobwatch.core.records import OutboxEntry, TrackedJob
from jobwatch.web import timeline
from jobwatch.web.timeline import state_class

STATE_ORDER = ("New", "Submitted", "Running", "Pause", "Success", "Failed", "Cancel", "Vanished")
REFRESH_SECONDS = 15


def e(value: Any) -> str:
    """Escape for HTML text and quoted attributes; None is empty."""
    return "" if value is None else escape(str(value), quote=True)


def ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "-"
    s = int((now - t).total_seconds())
    return f"in {_span(-s)}" if s < 0 else f"{_span(s)} ago"


def _span(s: int) -> str:
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def when(t: datetime | None) -> str:
    """An absolute time, to the second, in UTC (CI reports its own times in +08:00)."""
    return "-" if t is None else t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def job_href(root: str, key: JobKey) -> str:
    return f"{root}ui/jobs/{quote(key.job_id, safe='')}?{urlencode({'region': key.region, 'bucket': key.bucket})}"


def _job_field(tj: TrackedJob, name: str) -> Any:
    return getattr(tj.job, name, None) if tj.job is not None else None


def badge(state: str | None) -> str:
    return f'<span class="badge s-{state_class(state)}">{e(state or "New")}</span>'


def page(title: str, body: str, root: str, *, csrf: str | None = None, live: bool = False) -> str:
    logout = ""
    if csrf is not None:
        logout = (f'<form method="post" action="{root}ui/logout" class="logout">'
                  f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
                  f'<button type="submit">Log out</button></form>')
    refresh = ""
    if live:
        refresh = ('<label class="refresh"><input type="checkbox" id="refresh" checked> '
                   f'auto-refresh every {REFRESH_SECONDS}s</label>')
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)} · ci-jobwatch</title>"
            f"<link rel=\"stylesheet\" href=\"{root}ui/static/app.css\">"
            f"<script src=\"{root}ui/static/app.js\" defer></script></head>"
            f"<body data-refresh=\"{REFRESH_SECONDS}\"><header><a class=\"brand\" href=\"{root}ui\">ci-jobwatch</a>"
            f"<span class=\"spacer\"></span>{refresh}{logout}</header>"
            f"<main id=\"live\">{body}</main></body></html>")


def login(root: str, message: str | None = None) -> str:
    msg = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    body = (f'<section class="login"><h1>Sign in</h1>{msg}'
            f'<form method="post" action="{root}ui/login" autocomplete="off">'
            '<label for="api_key">API key (JOBWATCH_API_KEY)</label>'
            '<input type="password" id="api_key" name="api_key" required autofocus>'
            '<button type="submit">Sign in</button></form>'
            '<p class="hint">The key is checked once; the browser keeps only a signed session cookie.</p></section>')
    return page("Sign in", body, root)


def message_page(root: str, title: str, text: str) -> str:
    return page(title, f'<section class="message"><h1>{e(title)}</h1><p>{e(text)}</p>'
                       f'<p><a href="{root}ui">Back to the overview</a></p></section>', root)


def candidates_page(root: str, job_id: str, keys: Iterable[JobKey]) -> str:
    """A bare job ID tracked in several buckets: which one? (each a link to its page)."""
    items = "".join(f'<li><a href="{e(job_href(root, k))}">{e(str(k))}</a></li>' for k in keys)
    return page(job_id, f'<section class="message"><h1>Which job {e(job_id)}?</h1><p>{e(job_id)} is tracked in '
                        f'more than one bucket:</p><ul>{items}</ul>'
                        f'<p><a href="{root}ui">Back to the overview</a></p></section>', root)


# --- overview ---------------------------------------------------------------------------------------------------

def _query_string(params: Mapping[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "", 0) or k == "page" and v}
    return ("?" + urlencode(clean)) if clean else ""


def progress_bar(tj: TrackedJob, progress: Progress | None = None) -> str:
    """Done and failed children when the batch's children have been counted; else the batch state alone."""
    if progress is not None and progress.total:
        w_ok = 100.0 * (progress.succeeded + progress.cancelled) / progress.total
        w_fail = 100.0 * progress.failed / progress.total
        return (f'<span class="progress"><svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none">'
                f'<rect class="bg" width="100" height="8"/><rect class="ok" width="{w_ok:.2f}" height="8"/>'
                f'<rect class="fail" x="{w_ok:.2f}" width="{w_fail:.2f}" height="8"/></svg>'
                f'<span class="plabel">{e(progress.text())}</span></span>')
    state = tj.state or "New"
    cls = state_class(state)
    width = {"success": 100, "failed": 100, "cancel": 100, "vanished": 100}.get(cls, 0)
    label = {"success": "done", "failed": "failed", "cancel": "cancelled", "vanished": "vanished"}.get(cls, state)
    inner = f'<rect class="s-{cls}" width="{width}" height="8"/>' if width else ""
    anim = " indeterminate" if cls == "running" else ""
    stripe = '<rect class="stripe" width="30" height="8"/>' if anim else ""
    return (f'<span class="progress"><svg class="bar{anim}" viewBox="0 0 100 8" preserveAspectRatio="none">'
            f'<rect class="bg" width="100" height="8"/>{inner}{stripe}</svg>'
            f'<span class="plabel">{e(label)}</span></span>')


def _flags(tj: TrackedJob) -> str:
    out = []
    if tj.stalled:
        out.append('<span class="flag stalled" title="no change for longer than its stall threshold">stalled</span>')
    if tj.error_count:
        out.append(f'<span class="flag erroring" title="{e(tj.last_error)}">{tj.error_count} poll error'
                   f'{"s" if tj.error_count != 1 else ""}</span>')
    if not tj.active and tj.state is not None and state_class(tj.state) not in (
            "success", "failed", "cancel", "vanished"):
        out.append('<span class="flag untracked">untracked</span>')
    return "".join(out)


def _select(name: str, label: str, current: str | None, options: Iterable[tuple[str, str]]) -> str:
    opts = ['<option value="">all</option>']
    for value, text in options:
        sel = " selected" if value == current else ""
        opts.append(f'<option value="{e(value)}"{sel}>{e(text)}</option>')
    return f'<label>{e(label)} <select name="{e(name)}">{"".join(opts)}</select></label>'


def overview(ov: Overview, root: str, csrf: str) -> str:
    q = ov.query
    filters = {"state": q.state, "bucket": q.bucket, "tag": q.tag}
    page_no = q.offset // q.limit + 1
    pages = max((ov.total + q.limit - 1) // q.limit, 1)
    # counts per state, each a filter link
    known = [s for s in STATE_ORDER if s in ov.states] + sorted(s for s in ov.states if s not in STATE_ORDER)
    total_jobs = sum(ov.states.values())
    chips = [f'<a class="count{" on" if not q.state else ""}" href="{root}ui{e(_query_string({**filters, "state": None}))}">'
             f'<span class="n">{total_jobs:,}</span> all</a>']
    for s in known:
        on = " on" if q.state == s else ""
        cls = f"count s-{state_class(s.split(' (')[0])}{on}"
        if "(" in s:  # "Running (untracked)": a count, not a filter of its own
            chips.append(f'<span class="{cls}"><span class="n">{ov.states[s]:,}</span> {e(s)}</span>')
            continue
        href = f"{root}ui{_query_string({**filters, 'state': s})}"
        chips.append(f'<a class="{cls}" href="{e(href)}"><span class="n">{ov.states[s]:,}</span> {e(s)}</a>')
    outbox = ", ".join(f"{e(k)} {v:,}" for k, v in sorted(ov.outbox.items())) or "empty"
    states_for_filter = [(s, s) for s in known if "(" not in s]
    form = (f'<form class="filters" method="get" action="{root}ui" data-autosubmit>'
            + _select("state", "State", q.state, states_for_filter)
            + _select("bucket", "Bucket", q.bucket, [(b, b) for b in ov.buckets])
            + _select("tag", "Tag", q.tag, [(t, t) for t in ov.tags])
            + (f'<input type="hidden" name="per" value="{q.limit}">' if q.limit != 100 else "")
            + '<button type="submit">Filter</button>'
            + (f'<a class="clear" href="{root}ui">clear</a>' if any(filters.values()) else "")
            + "</form>")
    rows = []
    for tj in ov.jobs:
        href = job_href(root, tj.key)
        name = _job_field(tj, "name")
        jtype = _job_field(tj, "type")
        created: datetime = _job_field(tj, "created_at") or tj.first_seen
        shown = e(name) or '<span class="muted">(no name)</span>'
        rows.append(
            f'<tr class="{"problem" if tj.stalled or tj.error_count else ""}">'
            f'<td>{badge(tj.state)}</td>'
            f'<td class="name"><a href="{e(href)}">{shown}</a>'
            f'<div class="id">{e(tj.key.job_id)}</div></td>'
            f'<td>{e(tj.key.bucket)}<div class="id">{e(tj.key.region)}</div></td>'
            f'<td>{e(jtype or "-")}</td>'
            f'<td title="{e(when(created))}">{e(ago(created, ov.now))}</td>'
            f'<td title="{e(when(tj.last_change))}">'
            f'{e(ago(tj.last_change, ov.now))}</td>'
            f'<td>{progress_bar(tj, ov.progress.get(tj.key))}</td>'
            f'<td>{_flags(tj)}{_tags(tj.tags)}</td></tr>')
    table = ('<table class="jobs"><thead><tr><th>State</th><th>Name / job ID</th><th>Bucket</th><th>Type</th>'
             '<th>Age</th><th>Last change</th><th>Progress</th><th>Notes</th></tr></thead><tbody>'
             + ("".join(rows) or '<tr><td colspan="8" class="empty">No jobs match.</td></tr>')
             + "</tbody></table>")
    first = q.offset + 1 if ov.total else 0
    last = min(q.offset + len(ov.jobs), ov.total)
    nav = [f'<span class="range">{first:,}–{last:,} of {ov.total:,}</span>']
    per = q.limit if q.limit != 100 else None
    if page_no > 1:
        nav.append(f'<a rel="prev" href="{e(root + "ui" + _query_string({**filters, "per": per, "page": page_no - 1}))}">'
                   '← previous page</a>')
    if page_no < pages:
        nav.append(f'<a rel="next" href="{e(root + "ui" + _query_string({**filters, "per": per, "page": page_no + 1}))}">'
                   f'next page ({page_no + 1}/{pages}) →</a>')
    return (f'<section class="summary"><div class="counts">{"".join(chips)}</div>'
            f'<div class="outbox">Outbox: {outbox}</div></section>{form}'
            f'<nav class="pager">{"".join(nav)}</nav>{table}'
            f'{_dead_letters(ov.dead_letters, root, csrf, ov.now, back=_query_string({**filters, "per": per}))}')


def _tags(tags: Mapping[str, str]) -> str:
    return "".join(f'<span class="tag">{e(k)}={e(v)}</span>' for k, v in sorted(tags.items()))


def _deliveries(entry: OutboxEntry) -> str:
    if not entry.deliveries:
        return '<span class="muted">no attempt yet</span>'
    return "".join(f'<span class="sink d-{e(d.status)}" title="{e(d.last_error)}">{e(d.sink)}: {e(d.status)}'
                   f'{f" ({d.attempts}x)" if d.attempts > 1 else ""}</span>' for d in entry.deliveries.values())


def _retry_form(entry: OutboxEntry, root: str, csrf: str, back: str) -> str:
    return (f'<form method="post" action="{root}ui/outbox/{entry.notice.id}/retry" class="inline">'
            f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
            f'<input type="hidden" name="next" value="{e(back)}">'
            f'<button type="submit">Retry</button></form>')


def _dead_letters(entries: list[OutboxEntry], root: str, csrf: str, now: datetime, back: str) -> str:
    if not entries:
        return '<section class="dead"><h2>Dead letters</h2><p class="muted">None: every notice was delivered or ' \
               'is still being tried.</p></section>'
    rows = []
    for en in entries:
        n = en.notice
        rows.append(f'<tr><td>#{n.id}</td><td><a href="{e(job_href(root, n.key))}">{e(n.key.job_id)}</a></td>'
                    f'<td>{e(n.kind.value)}: {e(n.from_state or "-")} → {e(n.to_state or "-")}</td>'
                    f'<td>{e(ago(en.created_at, now))}</td><td>{_deliveries(en)}</td>'
                    f'<td class="err">{e(en.last_error)}</td><td>{_retry_form(en, root, csrf, back)}</td></tr>')
    return ('<section class="dead"><h2>Dead letters</h2><table class="notices"><thead><tr><th>Notice</th>'
            '<th>Job</th><th>What</th><th>Raised</th><th>Sinks</th><th>Last error</th><th></th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></section>")


# --- one job ----------------------------------------------------------------------------------------------------

def job(d: JobDetail, root: str, csrf: str) -> str:
    tj = d.job
    name = _job_field(tj, "name")
    j = tj.job
    facts = [("Job ID", tj.key.job_id), ("Bucket", tj.key.bucket), ("Region", tj.key.region),
             ("Type", _job_field(tj, "type")), ("Tracking", "active" if tj.active else "stopped"),
             ("First seen", ago(tj.first_seen, d.now)), ("Last poll", ago(tj.last_seen, d.now)),
             ("Last change", ago(tj.last_change, d.now)), ("Polls", tj.polls),
             ("Next poll", ago(tj.next_poll_at, d.now) if tj.active else "-")]
    if j is not None:
        facts += [("Created", when(j.created_at)), ("Ended", when(j.ended_at))]
        if j.code or j.message:
            facts.append(("CI says", f"{j.code or ''} {j.message or ''}".strip()))
    if tj.error_count:
        facts.append(("Poll errors", f"{tj.error_count} in a row; last: {tj.last_error}"))
    if tj.stalled:
        facts.append(("Stalled", "yes: no change for longer than its threshold"))
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v if v not in (None, '') else '-')}</dd>" for k, v in facts)
    actions = ""
    if tj.active:
        actions = (f'<form method="post" action="{root}ui/jobs/{quote(tj.key.job_id, safe="")}/untrack?'
                   f'{e(urlencode({"region": tj.key.region, "bucket": tj.key.bucket}))}" class="inline" '
                   'data-confirm="Stop watching this job? Its record and history are kept.">'
                   f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
                   '<button type="submit" class="danger">Untrack</button></form>')
    hist = "".join(f'<tr><td>{t.seq}</td><td>{e(when(t.observed_at))}</td><td>{badge(t.from_state)} → '
                   f'{badge(t.to_state)}</td><td>{e(t.code)}</td><td class="err">{e(t.message)}</td></tr>'
                   for t in d.history) or '<tr><td colspan="5" class="empty">No change observed yet.</td></tr>'
    back = f"/jobs/{quote(tj.key.job_id, safe='')}?" + urlencode({"region": tj.key.region, "bucket": tj.key.bucket})
    notes = "".join(f'<tr><td>#{n.notice.id}</td><td>{e(n.notice.kind.value)}: {e(n.notice.from_state or "-")} → '
                    f'{e(n.notice.to_state or "-")}</td><td>{e(when(n.created_at))}</td>'
                    f'<td><span class="status o-{e(n.status)}">{e(n.status)}</span></td><td>{_deliveries(n)}</td>'
                    f'<td class="err">{e(n.last_error)}</td>'
                    f'<td>{_retry_form(n, root, csrf, back) if n.status == "dead" else ""}</td></tr>'
                    for n in d.notices) or '<tr><td colspan="7" class="empty">No notice raised.</td></tr>'
    children = _children(d)
    failed_polls = ""
    if d.poll_errors:
        latest = list(reversed(d.poll_errors))[:20]
        rows = "".join(f'<tr><td>{e(when(p.at))}</td><td class="err">{e(p.message)}</td></tr>' for p in latest)
        failed_polls = (f'<section><h2>Failed polls</h2><p class="muted">{len(d.poll_errors):,} recorded'
                        f'{"" if len(latest) == len(d.poll_errors) else ", the latest 20 listed"}; each is a red mark '
                        'on the timeline.</p><table class="polls"><thead><tr><th>When</th><th>Error</th></tr></thead>'
                        f'<tbody>{rows}</tbody></table></section>')
    return (f'<p class="crumbs"><a href="{root}ui">← all jobs</a></p>'
            f'<section class="jobhead"><h1>{badge(tj.state)} {e(name) or e(tj.key.job_id)}</h1>{actions}'
            f'<div class="tags">{_tags(tj.tags)}</div></section>'
            f'<section><h2>Timeline</h2>{timeline.render(tj, d.history, d.notices, d.now, d.poll_errors)}</section>'
            f'{children}'
            f'<section class="facts"><dl>{dl}</dl></section>{failed_polls}'
            '<section><h2>Transitions</h2><table class="history"><thead><tr><th>#</th><th>Observed</th>'
            f'<th>Change</th><th>Code</th><th>Message</th></tr></thead><tbody>{hist}</tbody></table></section>'
            '<section><h2>Notices</h2><table class="notices"><thead><tr><th>Notice</th><th>What</th><th>Raised</th>'
            '<th>Status</th><th>Sinks</th><th>Last error</th><th></th></tr></thead>'
            f'<tbody>{notes}</tbody></table></section>')


def _children(d: JobDetail) -> str:
    """The batch's children as counted: the bar, counts by state, rate and time to finish, the failed objects."""
    p = d.progress
    if p is None or not p.total:
        return ""
    counts = "".join(f"<dt>{e(k)}</dt><dd>{getattr(p, k):,}</dd>"
                     for k in ("total", "succeeded", "failed", "running", "waiting", "cancelled"))
    rate, eta = p.rate(), p.eta_seconds()
    pace = []
    if rate:
        pace.append(f"{rate * 60:,.1f} children/min")
    if eta and not p.complete:
        pace.append(f"about {_span(int(eta))} to go")
    if p.complete:
        pace.append("final count")
    rows = "".join(f'<tr><td class="obj">{e(c.object_key)}</td><td class="id">{e(c.child_id)}</td>'
                   f'<td>{e(c.code)}</td><td class="err">{e(c.message)}</td></tr>' for c in d.failed_children)
    more = ""
    if p.failed > len(d.failed_children):
        more = (f'<p class="muted">The first {len(d.failed_children):,} of {p.failed:,} failed objects; all of them: '
                f'<code>jobwatch children {e(d.job.key.job_id)} --failed</code>.</p>')
    failed = ('<h3>Failed objects</h3><table class="failed"><thead><tr><th>Object</th><th>Child</th><th>Code</th>'
              f'<th>Message</th></tr></thead><tbody>{rows}</tbody></table>{more}') if rows else ""
    return (f'<section class="children"><h2>Children</h2><div class="childsum">'
            f'{progress_bar(d.job, p)}<span class="muted">{e(" · ".join(pace))}</span></div>'
            f'<dl class="counts">{counts}</dl>{failed}</section>')
