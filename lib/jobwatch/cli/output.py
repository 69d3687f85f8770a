"""How the CLI prints: tables with headers, ``-o table|wide|json|yaml`` (kubectl's convention), colour only for a
person at a terminal (never with a non-empty ``NO_COLOR`` or in a pipe), and a progress bar on stderr for long work.

A table is a list of :class:`Column` (header, how to get the cell, whether only ``-o wide`` shows it): adding a
column is one entry. Widths are terminal columns (:func:`display_width`: a CJK character takes two), and a cell
is always one line (control characters never reach the terminal). Machine formats (json, yaml) go to stdout
alone; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TextIO

from jobwatch.app.logs import colours_wanted

FORMATS = ("table", "wide", "json", "yaml")
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_STATE_COLOURS = {"Success": "32", "Failed": "31", "Cancel": "33", "Vanished": "33", "Pause": "33",
                  "Running": "36", "STALLED": "31"}


def add_output_option(p: argparse.ArgumentParser, *, wide: bool = True) -> None:
    """``-o FORMAT`` and its old spelling ``--json``."""
    choices = FORMATS if wide else ("table", "json", "yaml")
    p.add_argument("-o", "--output", choices=choices, default="table",
                   help=f"output format: {', '.join(choices)} (default table)")
    p.add_argument("--json", dest="output", action="store_const", const="json", help="same as -o json")


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Any], str]
    wide_only: bool = False
    colour: Callable[[str], str | None] | None = None  # the ANSI colour of a cell's value, if any


def render_table(columns: Sequence[Column], rows: Iterable[Any], *, wide: bool = False, color: bool = False) -> str:
    """Left-aligned columns two spaces apart, a header on top (also over no rows)."""
    cols = [c for c in columns if wide or not c.wide_only]
    cells = [[c.header for c in cols]] + [[one_line(c.cell(r)) for c in cols] for r in rows]
    sizes = [[display_width(value) for value in row] for row in cells]
    widths = [max(row[i] for row in sizes) for i in range(len(cols))]
    lines = []
    for n, (row, size) in enumerate(zip(cells, sizes)):
        parts = []
        for c, value, used, w in zip(cols, row, size, widths):
            pad = " " * (w - used)
            code = c.colour(value) if (color and n and c.colour) else None
            parts.append(f"\x1b[{code}m{value}\x1b[0m{pad}" if code else value + pad)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def display_width(text: str) -> int:
    """The terminal columns ``text`` takes: East Asian wide and fullwidth characters two, combining marks and
    other zero-width characters none, the rest one."""
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def one_line(text: str) -> str:
    """``text`` safe in a table cell: line breaks and tabs as spaces, other control characters (an escape
    sequence in an error message) as U+FFFD."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r\x0b\x0c" else "\ufffd", text)


def state_colour(value: str) -> str | None:
    for word, code in _STATE_COLOURS.items():
        if value.startswith(word) or word == "STALLED" and "STALLED" in value:
            return code
    return None


def stdout_colour() -> bool:
    return colours_wanted(sys.stdout)


def emit(data: Any, fmt: str, stream: TextIO | None = None) -> None:
    """Print plain data (dicts, lists, scalars) as JSON or YAML."""
    out = stream or sys.stdout
    if fmt == "yaml":
        out.write(to_yaml(data) + "\n")
    else:
        out.write(json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n")


def to_yaml(data: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON-like data. Strings are written as JSON strings, which YAML reads as
    double-quoted scalars, so no value is ever misread (``no``, ``1e3``, ``null``...)."""
    pad = " " * indent
    if isinstance(data, dict):
        if not data:
            return pad + "{}"
        lines = []
        for k, v in (sorted(data.items()) if all(isinstance(k, str) for k in data) else data.items()):
            key = k if isinstance(k, str) and _SAFE_KEY.match(k) else json.dumps(str(k))
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:\n{to_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(v).strip()}")
        return "\n".join(lines)
    if isinstance(data, list):
        if not data:
            return pad + "[]"
        lines = []
        for v in data:
            body = to_yaml(v, indent + 2)
            lines.append(f"{pad}- {body.lstrip()}")
        return "\n".join(lines)
    if data is None:
        return pad + "null"
    if isinstance(data, bool):
        return pad + ("true" if data else "false")
    if isinstance(data, (int, float)):
        return pad + json.dumps(data)
    return pad + json.dumps(str(data), ensure_ascii=False)


def cut(text: str | None, width: int) -> str:
    """``text`` on one line in at most ``width`` columns, cut between words with an ellipsis. A token too long to
    leave room for the rest (a URL, a path) is shortened in its middle (``https://examplebuc…/j0123``), so its
    start, its end and the words after it stay readable; a cut never falls inside a word unmarked."""
    text = " ".join(one_line(text or "").split())
    if display_width(text) <= width:
        return text
    words = text.split(" ")
    if len(words) == 1:
        return _middle(text, width)
    longest = max(16, width * 2 // 5)
    for limit in range(width - 1, longest - 1, -1):  # long tokens shortened only as much as it takes
        shortened = " ".join(_middle(w, limit) for w in words)
        if display_width(shortened) <= width:
            return shortened
    words = [_middle(w, longest) for w in words]
    kept: list[str] = []
    used = 0
    for word in words:
        need = display_width(word) + (1 if kept else 0)
        if used + need > width - 1:
            break
        kept.append(word)
        used += need
    return " ".join(kept).rstrip(" ,;:") + "…"


def _middle(word: str, width: int) -> str:
    """``word`` in at most ``width`` columns: its start, "…", its end."""
    if display_width(word) <= width:
        return word
    room = width - 1
    head = _fit(word, room - room * 2 // 5)
    tail = _fit(word[::-1], room - display_width(head))[::-1]
    return f"{head}…{tail}"


def _fit(text: str, width: int) -> str:
    """The longest start of ``text`` within ``width`` columns."""
    used = 0
    for i, ch in enumerate(text):
        used += _char_width(ch)
        if used > width:
            return text[:i]
    return text


class Progress:
    """Progress on stderr for a person at a terminal: a bar when the total is known, else a counter; nothing in
    a pipe, in CI or in SCF. Redrawn at most ten times a second."""

    def __init__(self, label: str, total: int | None = None, stream: Any = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown = False
        self._last = 0.0
        self._note = ""

    def __call__(self, count: int, total: int | None = None, note: str = "") -> None:
        if not self.live:
            return
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.shown and now - self._last < 0.1 and note == self._note and (self.total is None or
                                                                           count < self.total):
            return
        self._last, self._note = now, note
        if self.total:
            done = min(count, self.total)
            filled = int(30 * done / self.total)
            line = f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}"
        else:
            line = f"{self.label}: {count}"
        if note:
            line += f"  {cut(note, 60)}"
        self.stream.write(f"\r\x1b[2K{line}")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False
