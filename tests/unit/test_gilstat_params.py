"""gilstat's command line in-process: flight_profiler's `gilstat on [gil_take] [gil_hold] [interval]
[max_threads]` with the trailing numbers left out, `gilstat off`, our flags, and the bounds."""
import pytest

from flight_mcp import cmdline
from flight_mcp.errors import FlightError
from flight_mcp.tools import all_tools

TOOLS = all_tools()


def parse(cmd):
    return cmdline.parse(cmdline.split(cmd), TOOLS, 4242)[1]


def test_flight_profiler_lines_fill_from_the_left():
    p = parse("gilstat on 1000 1000 2")
    assert (p.action, p.take_threshold_ms, p.hold_threshold_ms, p.interval) == ("on", 1000, 1000, 2)
    assert p.max_threads == 500
    p = parse("gilstat on 5 5 10 100")
    assert (p.take_threshold_ms, p.hold_threshold_ms, p.interval, p.max_threads) == (5, 5, 10, 100)
    p = parse("gilstat on 7")
    assert (p.take_threshold_ms, p.hold_threshold_ms, p.interval) == (7, 10, 5)
    assert parse("gilstat on").interval == 5 and parse("gilstat").action == "on"
    assert parse("gilstat off").action == "off"


def test_flags_and_positionals_mix():
    p = parse("gilstat --hold 50 -i 3 -r 200")
    assert (p.action, p.hold_threshold_ms, p.interval, p.rate, p.take_threshold_ms) == ("on", 50, 3, 200, 10)
    p = parse("gilstat on 20 --interval 1.5")
    assert (p.take_threshold_ms, p.interval, p.hold_threshold_ms) == (20, 1.5, 10)


@pytest.mark.parametrize("cmd", ["gilstat start", "gilstat on 0", "gilstat on 1 1 0", "gilstat on 1 1 1 0",
                                 "gilstat -r 5", "gilstat on 1 1 1 1 1", "gilstat on x"])
def test_bad_lines_are_usage_errors(cmd):
    with pytest.raises(FlightError) as e:
        parse(cmd)
    assert e.value.code == "usage"
