"""Text output escapes control characters that come from the target; JSON keeps the strings.
In-process: the host's renderers on Result models as the agent would fill them."""
import re

import pytest

from flight_mcp.render import escape, escaped
from flight_mcp.tools.base import Call
from flight_mcp.tools.stack import TOOL as STACK, StackResult
from flight_mcp.tools.trace import TOOL as TRACE
from flight_mcp.tools.watch import TOOL as WATCH

# what must never reach a terminal raw: C0 (but tab and newline), DEL, C1, bidi overrides
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

HOSTILE = [
    "\x1b[2J\x1b[H",                 # clear the screen
    "\x1b]0;owned\x07",              # set the window title (OSC ... BEL)
    "\x1b]52;c;cm0gLXJmIH4=\x1b\\",  # write the clipboard (OSC 52, ST)
    "\x9b31m",                       # 8-bit CSI
    "ok\rFAKE",                      # carriage return rewrites the line
    "abc\x08\x08\x08xyz",            # backspaces
    "nul\x00del\x7f",
    "\u202etxt.exe",                 # right-to-left override
    "\u2066isolate\u2069",
    "\x1bP+q\x1b\\",                 # DCS
]


@pytest.mark.parametrize("text", HOSTILE)
def test_escape_leaves_no_control_character(text):
    out = escape(text)
    assert not RAW.search(out), out
    assert "\\x" in out or "\\u" in out  # something visible stands in


def test_escape_keeps_ordinary_text_and_layout():
    for text in ("plain", "héllo ✓ 🔍 ├─ └─", "a\tb\nc", ""):
        assert escape(text) == text


def _stack(name, extra=""):
    return StackResult(pid=1, source="agent", notes=["n" + extra], threads=[{
        "ident": 1, "name": name, "native_id": 2, "daemon": True, "main": True, "note": "note" + extra,
        "frames": [{"file": "/x/evil" + extra + ".py", "line": None, "name": "fn" + extra, "source": "s" + extra}]}])


OUR_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("text", HOSTILE)
def test_stack_text_escapes_every_field_and_keeps_colours(text):
    result = _stack(text, text)
    for color in (False, True):
        out = STACK.text(result, color)
        assert not RAW.search(OUR_COLOURS.sub("", out)), out
    assert "\x1b[1m" in STACK.text(result, True)   # our bold title survives
    assert result.threads[0].name == text           # the model (the JSON) keeps the string
    assert result.model_dump(mode="json")["threads"][0]["frames"][0]["file"].endswith(text + ".py")


def test_watch_and_trace_text_escape_values_keys_and_names():
    hostile = "\x1b[2Jx"
    watch = WATCH.result(
        target="m.f", kind="function", file="/f.py", line=1, mechanism="m", started=0.0, duration_s=1.0, seen=1,
        matched=1, captured=1, limit=1, stopped="limit", expr="args",
        expression_failures=[{"arg": "expr", "expr": "args", "failures": 1, "error": {"type": "E", "message": hostile}}],
        records=[{"time": 0.0, "cost_ms": 1.0, "is_exp": True, "thread": hostile, "tid": 1,
                  "view": {"type": "mod." + hostile, "kind": "mapping", "repr": "", "children": [
                      {"name": hostile, "view": {"type": "str", "kind": "leaf", "repr": hostile}}]},
                  "exception": {"type": "E", "message": hostile,
                                "frames": [{"file": "/a.py", "line": 1, "name": "f", "source": "line " + hostile}]}}])
    out = WATCH.text(watch, False)
    assert "\x1b" not in out and out.count("\\x1b[2Jx") >= 5, out
    assert "Traceback (most recent call last):\n" in out  # multi-line text keeps its lines
    trace = TRACE.result(
        target="m.f", kind="function", file="/f.py", line=1, mechanism="m", started=0.0, duration_s=1.0, seen=1,
        matched=1, captured=1, limit=1, stopped="limit", depth=-1, interval=0, entrance_time=0,
        invocations=[{"time": 0.0, "thread": hostile, "tid": 1, "daemon": None, "cost_ms": 1.0,
                      "exception": {"type": "E", "message": hostile}, "root": {"name": hostile, "qualname": hostile, "file": "/a.py",
                                                     "line": 1, "cost_ms": 1.0}}])
    out = TRACE.text(trace, True)
    assert "\x1b[2J" not in out and "\\x1b[2Jx" in out


def test_escaped_copies_nested_containers_and_keys():
    data = {"k\x1b": ["v\x07", ("t\x9b",)], "n": 3}
    assert escaped(data) == {"k\\x1b": ["v\\x07", ("t\\x9b",)], "n": 3}
    assert data == {"k\x1b": ["v\x07", ("t\x9b",)], "n": 3}


def test_progress_messages_are_escaped():
    seen = []
    call = Call(None, progress=lambda done, total, msg: seen.append(msg))
    call.progress(1, 2, "m.f 1.0ms raised E: \x1b[2J")
    assert seen == ["m.f 1.0ms raised E: \\x1b[2J"]
