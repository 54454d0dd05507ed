"""A capture's memory is bounded by what it keeps, not by `limit` (no upper bound: `-n 100000000`
means "until I stop"): agent/capture.Capture counts every record, keeps the latest KEPT_RECORDS."""
from flight_mcp.agent import capture
from flight_mcp.tools.capture_common import Summary, summary_line


class Ctx:
    cancelled = False

    def wakeup(self):
        pass


def test_records_beyond_twice_the_kept_are_counted_not_kept():
    cap = capture.Capture(Ctx(), 100000000)
    for i in range(5 * capture.KEPT_RECORDS):
        assert cap.add({"i": i})
    assert len(cap.records) == 2 * capture.KEPT_RECORDS
    assert cap.captured == 5 * capture.KEPT_RECORDS and cap.not_kept == 3 * capture.KEPT_RECORDS
    # the command's thread reported the first 1500: the oldest of those go, the latest KEPT stay
    assert cap.forget_reported(1500) == capture.KEPT_RECORDS
    assert len(cap.records) == capture.KEPT_RECORDS and cap.records[0] == {"i": capture.KEPT_RECORDS}
    assert cap.forget_reported(10) == 0   # never below KEPT_RECORDS
    assert not cap.done


def test_the_limit_still_ends_the_capture():
    cap = capture.Capture(Ctx(), 3)
    assert [cap.add({}) for _ in range(4)] == [True, True, True, False]
    assert cap.done and cap.captured == 3 and cap.not_kept == 0


def test_the_summary_says_what_was_left_out():
    s = Summary(target="m.f", kind="function", file="m.py", line=1, mechanism="x", started=0.0, duration_s=5.0,
                seen=9000, matched=9000, captured=9000, not_kept=8000, limit=100000000, stopped="deadline")
    assert "8000 of them are left out of this answer (a capture keeps the latest 1000)" in summary_line(s, "watch")
    assert "left out" not in summary_line(s.model_copy(update={"not_kept": 0}), "watch")
