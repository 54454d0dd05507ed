"""Messages name the cause and the fix in the caller's terms: watch never suggests a trace option,
a stopped process is said to be stopped (read from /proc, no process of ours started)."""
import os

from flight_mcp.attach import procs
from flight_mcp.tools.capture_common import Summary, empty_hint


def _summary(**kw):
    base = dict(target="m.f", kind="function", file="/f.py", line=1, mechanism="m", started=0.0, duration_s=3.0,
                seen=0, matched=0, skipped=0, captured=0, limit=5, stopped="deadline")
    return Summary(**{**base, **kw})


def test_watch_hint_never_names_trace_options():
    for kw in (dict(seen=9), dict(seen=9, matched=2), dict(seen=9, matched=2, stopped="cancel")):
        hint = empty_hint(_summary(**kw), "watch")
        assert "-et" not in hint and "entrance" not in hint, hint
    assert "no call passed the filter (filter_expr/exception)" in empty_hint(_summary(seen=9), "watch")
    assert "raise timeout_s" in empty_hint(_summary(seen=9, matched=2), "watch")


def test_trace_hint_names_et_only_when_calls_were_below_it():
    assert "lower entrance_time" in empty_hint(_summary(seen=9, matched=4, skipped=4), "trace")
    assert "entrance_time" not in empty_hint(_summary(seen=9, matched=4), "trace")


def test_a_running_process_is_not_reported_stopped():
    assert procs.stopped_error(os.getpid()) is None
    assert procs.stopped_error(2 ** 22 + 12345) is None   # no such pid: other checks say so
