"""monitor's text and its params, from hand-made Results: Arthas's columns plus p50/p95/max, a row
per --by value, the slow values marked and named, the bound on values said, the sentences in the
caller's language, and the deadline derived from (or checked against) the cycles. No process."""
import pytest
from pydantic import ValidationError

from flight_mcp.errors import FlightError
from flight_mcp.render import wall_time
from flight_mcp.tools import monitor
from flight_mcp.tools.base import Call
from flight_mcp.tools.monitor import MonitorParams, MonitorResult, slow_keys

CLI, MCP = Call(None, on_cli=True), Call(None)
AT = 1700000000.5


def stats(calls, fails, avg, p50, p95, mx):
    return dict(calls=calls, successes=calls - fails, failures=fails, avg_ms=avg, p50_ms=p50, p95_ms=p95, max_ms=mx)


def key(k, *a, kind="value"):
    return dict(stats(*a), kind=kind, key=k)


KEYS = [key("'acme'", 10, 0, 2.0, 2.0, 2.1, 2.2), key("'initech'", 10, 0, 30.0, 30.0, 31.0, 32.0),
        key("'hooli'", 10, 10, 2.0, 2.0, 2.0, 2.0), key(None, 30, 0, 2.0, 2.0, 2.0, 2.0, kind="other"),
        key(None, 2, 0, 2.0, 2.0, 2.0, 2.0, kind="failed")]
WHOLE = stats(62, 10, 6.84, 2.0, 30.0, 32.0)


def result(by="args[0]", keys=KEYS, n=2, **kw):
    table = dict(stats=WHOLE, keys=keys if by else [], other_keys=7 if by else 0, keys_overflow=False)
    cycles = [dict(table, index=i + 1, start=AT + i, end=AT + i + 1, duration_s=1.0, partial=False) for i in range(n)]
    base = dict(target="app.Service.handle", kind="function", file="/srv/app.py", line=9, mechanism="sys.monitoring",
                started=AT, duration_s=2.0, seen=70, matched=62 * n, captured=n, limit=n, stopped="limit",
                cycle_s=1.0, by=by, cycles=cycles, cycles_dropped=0, total=table)
    return MonitorResult.model_validate({**base, **kw})


def test_cycle_table_layout():
    lines = monitor.TOOL.text(result(n=1).spoken_in(MonitorParams, CLI), False).splitlines()
    assert lines[0] == "cycle 1/1, 1s"
    assert lines[1].split() == ["timestamp", "class", "method", "by", "total", "success", "fail", "avg-rt(ms)",
                                "p50(ms)", "p95(ms)", "max(ms)", "fail-rate"]
    assert set(lines[2]) == {"-"} and len(lines[2]) == len(lines[1])
    stamp = wall_time(AT + 1)
    assert lines[3].split() == [*stamp.split(), "app.Service", "handle", "*", "62", "52", "10", "6.84", "2.00",
                                "30.00", "32.00", "16.13%"]
    assert lines[4].split() == ["'acme'", "10", "10", "0", "2.00", "2.00", "2.10", "2.20", "0.00%"]
    assert lines[5].split() == ["'initech'", "10", "10", "0", "30.00", "30.00", "31.00", "32.00", "0.00%", "◀", "slow"]
    assert lines[6].split()[-1] == "100.00%" and lines[7].split()[0] == "(other)"
    assert lines[8].split()[:2] == ["(by", "failed)"]
    # columns line up: every row's numbers end where the header's do
    assert lines[4].index("0.00%") + 5 == len(lines[1].rstrip()) == lines[3].index("16.13%") + 6
    text = "\n".join(lines)
    assert "by args[0]: the 3 values with the most calls are shown; 7 more values are counted in (other)." in text
    assert "slow values of args[0] over all cycles" in text and "'initech' avg 30.00ms p95 31.00ms" in text
    assert lines[-1] == ("monitor app.Service.handle: 1 of 1 cycle of 1s; 70 calls seen, 62 counted; stopped because "
                         "the cycle was done.")


def test_total_and_plain_layout():
    text = monitor.TOOL.text(result(by=None, n=2), False)
    assert "cycle 2/2, 1s" in text and "total of 2 cycles, 2s" in text
    header = [line for line in text.splitlines() if line.startswith(" timestamp")][0]
    assert "by" not in header.split()
    assert "◀ slow" not in text and "slow values" not in text
    total_row = [line for line in text.splitlines() if line.startswith(" total ")][0]
    assert total_row.split()[:3] == ["total", "app.Service", "handle"]
    assert "stopped because the 2 cycles were done" in text


def test_slow_is_relative_to_the_other_calls():
    t = result().total
    assert [k.key for k in slow_keys(t)] == ["'initech'"]
    even = result(keys=[key("'a'", 5, 0, 3.0, 3.0, 3.0, 3.0), key("'b'", 5, 0, 3.0, 3.0, 3.0, 3.0)])
    assert slow_keys(even.total) == []
    # one outlier among few calls: the mean is high but the median is not
    outlier = result(keys=[key("'a'", 2, 0, 30.0, 3.0, 57.0, 57.0), key("'b'", 20, 0, 3.0, 3.0, 3.0, 3.0)])
    assert slow_keys(outlier.total) == []


def test_partial_cycle_cancel_dropped_cycles_and_empty():
    r = result(n=2, stopped="cancel", cycles_dropped=98)
    r.cycles[-1].partial = True
    text = monitor.TOOL.text(r, False)
    assert "(the first 98 cycles are not kept; the total covers them)" in text
    assert "cycle 2/2, 1s (cut short)" in text and "stopped because it was cancelled" in text
    empty = dict(calls=0, successes=0, failures=0, avg_ms=None, p50_ms=None, p95_ms=None, max_ms=None)
    r = result(by=None, n=1, seen=0, matched=0)
    r.cycles[0].stats = r.total.stats = monitor.Stats(**empty)
    text = monitor.TOOL.text(r, False)
    assert text.splitlines()[3].split()[-8:] == ["0", "0", "0", "-", "-", "-", "-", "0.00%"]
    assert "No call of app.Service.handle" in text


def test_failures_and_progress_speak_the_callers_language():
    fail = [{"arg": "by", "expr": "args[5]", "failures": 3, "error": {"type": "IndexError", "message": "tuple "
             "index out of range"}}]
    r = result(expression_failures=fail)
    assert ("warning: --by expression 'args[5]' raised IndexError: tuple index out of range (3 calls). Those calls "
            "are counted in the (by failed) row") in monitor.TOOL.text(r.spoken_in(MonitorParams, CLI), False)
    assert "warning: by expression 'args[5]'" in monitor.TOOL.text(result(expression_failures=fail)
                                                                  .spoken_in(MonitorParams, MCP), False)
    line = monitor.progress_line(result().cycles[0], 2)
    assert line == "cycle 1/2: 62 calls, 10 failed, avg 6.84ms p95 30.00ms max 32.00ms; slow: 'initech'"


def test_deadline_derived_or_checked():
    p = MonitorParams(pid=1, module="m", method="f", cycle_s=2, limit=3)
    assert p.timeout_s is None and "timeout_s" not in p.agent_args()
    assert monitor.timeout_of(p) == 6 + monitor.ATTACH_ALLOWANCE_S
    assert monitor.timeout_of(MonitorParams(pid=1, module="m", method="f", cycle_s=2, limit=3, timeout_s=6)) == 6
    with pytest.raises(FlightError) as e:
        monitor.timeout_of(MonitorParams(pid=1, module="m", method="f", cycle_s=2, limit=3, timeout_s=5))
    assert e.value.code == "bad_argument" and "{arg:timeout_s} 5s is shorter than the 3 cycles of 2s" in e.value.message
    big = MonitorParams(pid=1, module="m", method="f", cycle_s=1, limit=100000000)   # "until I stop"
    assert monitor.timeout_of(big) > 1e8
    with pytest.raises(ValidationError):
        MonitorParams(pid=1, module="m", method="f", cycle_s=0.01)
    with pytest.raises(ValidationError):
        MonitorResult.model_validate({**result().model_dump(), "surprise": 1})
