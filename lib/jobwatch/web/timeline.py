"""One job's life as an SVG drawn on the server: its states as coloured spans, each transition as a dot, each
failed poll as a red mark, and the notices raised for it on a second lane (coloured by delivery outcome).

Only attributes and classes, no ``style`` attributes, so it lives under a Content-Security-Policy without
``'unsafe-inline'``; every text from CI or users is escaped.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Sequence

from jobwatch.core.records import OutboxEntry, PollError, TrackedJob, Transition

WIDTH, HEIGHT = 960, 150
LEFT, RIGHT = 16, 16
STATE_Y, NOTICE_Y = 46, 104


def state_class(state: str | None) -> str:
    """A CSS class for a recorded state: known states by name, anything else ``other``."""
    known = {"submitted", "running", "success", "failed", "pause", "cancel", "vanished"}
    s = (state or "new").lower()
    return s if s in known or s == "new" else "other"


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def render(job: TrackedJob, history: Sequence[Transition], notices: Sequence[OutboxEntry],
           now: datetime, errors: Sequence[PollError] = ()) -> str:
    start = job.first_seen
    ends = [now if job.active else (job.last_change or job.last_seen or job.first_seen)]
    ends += [t.observed_at for t in history] + [n.notice.observed_at for n in notices] + [p.at for p in errors]
    if job.last_seen:
        ends.append(job.last_seen)
    end = max(ends)
    span = max((end - start).total_seconds(), 1.0)
    usable = WIDTH - LEFT - RIGHT

    def x(t: datetime) -> float:
        return round(LEFT + usable * max(0.0, min(1.0, (t - start).total_seconds() / span)), 1)

    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="timeline of job {escape(job.key.job_id)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text class="lane" x="{LEFT}" y="18">states</text>',
           f'<text class="lane" x="{LEFT}" y="{NOTICE_Y - 16}">notices</text>',
           f'<line class="axis" x1="{LEFT}" y1="{NOTICE_Y}" x2="{WIDTH - RIGHT}" y2="{NOTICE_Y}"/>']
    # spans: from first seen (not yet observed) through each transition to the end
    points = [(start, None)] + [(t.observed_at, t.to_state) for t in history]
    for i, (t0, state) in enumerate(points):
        t1 = points[i + 1][0] if i + 1 < len(points) else end
        x0, x1 = x(t0), x(t1)
        out.append(f'<rect class="span s-{state_class(state)}" x="{x0}" y="{STATE_Y - 9}" '
                   f'width="{max(x1 - x0, 1.5)}" height="18"><title>{escape(state or "not yet observed")}: '
                   f'{escape(_fmt(t0))} to {escape(_fmt(t1))}</title></rect>')
    last_label = [-1e9, -1e9]  # right end of the last label above / below the line: labels never overlap
    for i, t in enumerate(history):
        cx = x(t.observed_at)
        label = t.to_state[:24]
        detail = f"{t.from_state or 'new'} -> {t.to_state} at {_fmt(t.observed_at)}"
        if t.code or t.message:
            detail += f" ({t.code or ''} {t.message or ''})".rstrip()
        text = ""
        width = 7.5 * len(label) + 8
        anchor = "end" if cx > WIDTH - 120 else "start"
        left = cx - width if anchor == "end" else cx
        for row in (i % 2, 1 - i % 2):
            if left > last_label[row]:
                last_label[row] = left + width
                ty = STATE_Y - 16 if row == 0 else STATE_Y + 28
                text = f'<text x="{cx}" y="{ty}" text-anchor="{anchor}">{escape(label)}</text>'
                break
        out.append(f'<g class="transition"><circle class="dot s-{state_class(t.to_state)}" cx="{cx}" cy="{STATE_Y}" '
                   f'r="6"><title>{escape(detail)}</title></circle>{text}</g>')
    for p in errors:  # each failed poll: a red mark under the states
        cx = x(p.at)
        out.append(f'<g class="poll-error"><path d="M{cx - 6},{STATE_Y + 22} l6,-10 l6,10 z"/>'
                   f'<title>poll failed at {escape(_fmt(p.at))}: {escape(p.message)}</title></g>')
    if not errors and job.error_count and job.last_error:  # a store from before failed polls were kept
        cx = x(job.last_seen or end)
        out.append(f'<g class="poll-error"><path d="M{cx - 6},{STATE_Y + 22} l6,-10 l6,10 z"/>'
                   f'<title>{job.error_count} failed poll(s) in a row, last: {escape(job.last_error)}</title></g>')
    for n in notices:
        cx = x(n.notice.observed_at)
        sinks = ", ".join(f"{d.sink}: {d.status}" for d in n.deliveries.values()) or "no delivery yet"
        what = n.notice.outcome
        out.append(f'<rect class="notice n-{escape(n.status)}" x="{cx - 5}" y="{NOTICE_Y - 5}" width="10" height="10" '
                   f'transform="rotate(45 {cx} {NOTICE_Y})"><title>notice #{n.notice.id} {escape(what)} '
                   f'({escape(n.status)}): {escape(sinks)}</title></rect>')
    out.append(f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">{escape(_fmt(start))}</text>')
    out.append(f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
               f'{escape(_fmt(end))}{" (now)" if job.active else ""}</text>')
    out.append("</svg>")
    return "".join(out)
