"""Shared pieces of the text renderings: colour, tree glyphs, object views, and escaping.

Text from the target (thread names, values, file names, exception messages) can hold terminal
control sequences: printed raw, `\\x1b[2J...` clears or rewrites the screen of whoever reads it
(root's terminal included). Every text rendering is made from `escaped(result)`, a copy of the
Result whose strings have their control characters escaped; our own colours are added by the
renderers afterwards, so they stay. The JSON (structuredContent, --json) keeps the strings as
they are.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from .models import ExceptionFact, ValueView

RESET = "\033[0m"
COLORS = {"red": "\033[31m", "yellow": "\033[33m", "green": "\033[32m", "faint": "\033[2;32m",
          "bold": "\033[1m", "cyan": "\033[36m", "dim": "\033[2m"}


# C0 controls but tab and newline (text layout our renderers use: tracebacks, sources), DEL, C1
# (\\x9b is a one-byte CSI on some terminals), and the bidirectional overrides that reorder what is
# shown (U+202A-U+202E, U+2066-U+2069).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: str) -> str:
    """text with its control characters written as escapes (`\\x1b`), as repr() would."""
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


def escaped(obj: Any) -> Any:
    """A copy of obj (a Result model, or what it holds) with every string escaped, keys included."""
    if isinstance(obj, str):
        return escape(obj)
    if obj is None or type(obj) in (int, float, bool):   # before BaseModel: an ABC's check costs ~10 µs each
        return obj
    if isinstance(obj, BaseModel):
        return obj.model_copy(update={k: escaped(v) for k, v in obj.__dict__.items()})
    if isinstance(obj, dict):
        return {escaped(k): escaped(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(escaped(x) for x in obj)
    return obj


def paint(text: str, color: str | None, enabled: bool) -> str:
    if not enabled or not color:
        return text
    return COLORS[color] + text + RESET


def _quoted(text: str) -> str:
    """A str repr in flight_profiler's JSON-like style: 'abc' -> "abc"."""
    if len(text) >= 2 and text[0] == text[-1] == "'" and '"' not in text and "\\" not in text:
        return '"' + text[1:-1] + '"'
    return text


# what a missing view shows
NO_VIEW = ValueView(type="?", kind="leaf", repr="")


def type_label(view: ValueView) -> str:
    return f"<class '{view.type}'>"


# What every `... N more` of a value says: how to see the rest.
ELIDED_HOW = "verbose shows up to 50 items; an expression picks others, e.g. target[5:15] or target['key']"


def view_lines(view: ValueView, indent: str = "  ") -> list[str]:
    """A value's view as lines, in flight_profiler's layout: sorted, double-quoted dict keys;
    `Type({...})` for objects; first and last 5 items of long containers around `... N more`."""
    kids = view.children
    if not kids:
        text = _quoted(view.repr or "") if view.kind == "leaf" else (view.repr or "")
        return [text + ("  (cycle: shown above)" if view.cycle else "")]
    kind = view.kind
    if kind == "mapping" or kind == "object":
        opener, closer, sep = "{", "}", ", "
    elif kind == "set":
        opener, closer, sep = "set(", ")", ","
    elif view.type == "tuple":
        opener, closer, sep = "(", ")", ","
    else:
        opener, closer, sep = "[", "]", ","
    if kind == "object":
        short = view.type.rsplit(".", 1)[-1]
        opener, closer = f"{short}({{", "})"
    body: list[list[str]] = []
    for kid in kids:
        sub = view_lines(kid.view, indent)
        if kid.name:
            sub = [f"{_quoted(kid.name)}: {sub[0]}"] + sub[1:]
        body.append(sub)
    if view.elided:
        at = view.elided_at if view.elided_at is not None else len(body)
        body.insert(at, [f"... {view.elided} more ({ELIDED_HOW})"])
    lines = [opener]
    for i, sub in enumerate(body):
        end = sep if i < len(body) - 1 else ""
        lines.extend(indent + line for line in sub[:-1])
        lines.append(indent + sub[-1] + end)
    lines.append(closer)
    return lines


def rows_block(rows: list[tuple[str, list[str]]], width: int) -> str:
    """Labelled rows (`  EXPR:   value`), continuation lines aligned under the value column."""
    out = []
    pad = " " * (2 + width)
    for label, lines in rows:
        out.append("  " + label.ljust(width) + (lines[0] if lines else ""))
        out.extend(pad + line for line in lines[1:])
    return "\n".join(out)


def expr_block(expr: str, view: ValueView, width: int = 12) -> str:
    """The EXPR / TYPE / VALUE layout of getglobal, watch and vmtool."""
    return rows_block([("EXPR:", [expr]), ("TYPE:", [type_label(view)]), ("VALUE:", view_lines(view))], width)


def wall_time(epoch: float) -> str:
    """flight_profiler's timestamp, local time: 2026-04-19 11:35:38:953 (milliseconds after a colon)."""
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) + f":{int((epoch % 1) * 1000):03d}"


def exception_line(exc: ExceptionFact) -> str:
    return f"{exc.type}: {exc.message}" if exc.message else exc.type


def traceback_lines(exc: ExceptionFact) -> list[str]:
    """The exception as Python prints it: `Traceback (most recent call last):`, a File line (and
    its source) per frame, then `Type: message`."""
    lines = ["Traceback (most recent call last):"]
    for i, fr in enumerate(exc.frames):
        if exc.frames_elided and i == min(5, len(exc.frames)):
            lines.append(f"  ... {exc.frames_elided} frames ...")
        lines.append(f'  File "{fr.file}", line {"?" if fr.line is None else fr.line}, in {fr.name}')
        if fr.source:
            lines.append("    " + fr.source)
    lines.extend(exception_line(exc).split("\n"))
    return lines
