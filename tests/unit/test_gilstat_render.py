"""gilstat's text from a Result: flight_profiler's report lines (their tests grep them), every
thread row, events with the holder's stack, target strings escaped, and `off`."""
from flight_mcp.tools import all_tools
from flight_mcp.tools.gilstat import GilstatResult

TOOL = all_tools()["gilstat"]


def result(**over):
    base = dict(
        action="on", mechanism="gil_state_sampler", pid=7, start=1.7e9, duration_s=2.0, interval=2.0,
        stopped_by="interval", samples=1800, resolution_ms=1.11, rate=1000, held_share=0.97,
        agent_hold_share=0.001, switches=48, waits_measured=True, hold_threshold_ms=30, take_threshold_ms=20,
        threads=[
            dict(ident=1, native_id=11, name="hog\x1b[31m", hold_share=0.85, wait_share=0.08, long_holds=3,
                 long_waits=0, max_hold_ms=332.1, max_wait_ms=3.0),
            dict(ident=2, native_id=12, name="spinner", hold_share=0.06, wait_share=0.85, long_holds=0,
                 long_waits=14, max_hold_ms=20.0, max_wait_ms=124.6),
            dict(ident=None, native_id=None, name=None, ended=True, hold_share=0.01, wait_share=0.0,
                 long_holds=0, long_waits=0, max_hold_ms=1.0, max_wait_ms=0.0),
        ],
        events=[
            dict(kind="hold", ident=1, native_id=11, name="hog\x1b[31m", start=1.7e9 + 0.5, duration_ms=332.1,
                 ongoing=True, stack_after_ms=340.0,
                 frames=[dict(file="app.py", line=17, name="hog", source="sorted(DATA)")]),
            dict(kind="wait", ident=2, native_id=12, name="spinner", start=1.7e9 + 0.6, duration_ms=124.6,
                 ongoing=False),
        ],
        events_elided=5, long_holds=3, long_waits=14)
    base.update(over)
    return GilstatResult.model_validate(base)


def test_the_report_lines_rows_and_events():
    text = TOOL.text(result(), False)
    lines = text.splitlines()
    assert "gil statistics report:" in lines
    assert any(line.startswith("gil warning report: 3 holds over 30 ms, 14 waits over 20 ms (the 2 longest")
               for line in lines), text
    assert "resolution 1.11 ms" in text and "GIL held 97.0% of the time, 48 switches" in text
    hog = next(line for line in lines if "(tid=11)" in line and "%" in line)
    assert "85.0%" in hog and "8.0%" in hog and "332.1" in hog
    assert "\x1b" not in text and "hog\\x1b[31m" in text  # the target's thread name, escaped
    assert any("[ended]" in line for line in lines)
    hold = next(line for line in lines if line.lstrip().startswith("hold"))
    assert "332.1 ms+" in hold  # still going at the end
    assert 'File "app.py", line 17, in hog' in text and "sorted(DATA)" in text
    assert "read 340 ms after the hold began" in text


def test_early_stops_and_unknown_waits_are_said():
    text = TOOL.text(result(stopped_by="deadline", waits_measured=False, events=[], events_elided=0,
                            long_holds=0, long_waits=0), False)
    assert "(stopped by deadline)" in text and "waits unknown" in text
    assert "(waits:" not in text
    assert "resolution 1.11 ms (waits: 9.00 ms)" in TOOL.text(result(wait_resolution_ms=9.0), False)
    assert "gil warning report: 0 holds over 30 ms, 0 waits over 20 ms" in text


def test_off():
    assert "nothing was running" in TOOL.text(GilstatResult(action="off", stopped_running=False), False)
    assert "stopped the measurement" in TOOL.text(GilstatResult(action="off", stopped_running=True), False)
