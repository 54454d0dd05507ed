"""fleet.py's merge and text from hand-made per-process Results, its Params rule and its command-line
spellings: no process is started."""
import pytest
from pydantic import ValidationError

from flight_mcp import fleet
from flight_mcp.errors import FlightError
from flight_mcp.tools import all_tools
from flight_mcp.tools.mem import MemResult
from flight_mcp.tools.stack import StackResult
from flight_mcp.tools.watch import WatchResult

pytestmark = pytest.mark.timeout(30)

TOOLS = all_tools()


def frame(name, line):
    return {"file": f"/app/{name}.py", "line": line, "name": name, "qualname": name, "source": f"{name}()"}


ACCEPT = [frame("run", 10), frame("accept", 20)]
ORDER = [frame("run", 10), frame("handle", 30), frame("process_order", 40)]


def stack_of(pid, *stacks):
    return StackResult(pid=pid, source="agent", threads=[
        {"name": name, "native_id": pid * 10 + i, "frames": frames} for i, (name, frames) in enumerate(stacks)])


STACKS = {101: stack_of(101, ("MainThread", ACCEPT)), 102: stack_of(102, ("MainThread", ACCEPT)),
          103: stack_of(103, ("MainThread", ORDER), ("worker", ACCEPT)),
          104: stack_of(104, ("MainThread", ACCEPT))}


def test_identical_stacks_are_one_group_across_processes_biggest_first():
    groups = fleet.group_stacks(STACKS)
    assert [(g.count, g.processes) for g in groups] == [(4, [101, 102, 103, 104]), (1, [103])]
    assert [f.name for f in groups[0].frames] == ["run", "accept"]
    assert {(t.pid, t.name) for t in groups[0].threads} == {(101, "MainThread"), (102, "MainThread"),
                                                           (103, "worker"), (104, "MainThread")}
    assert fleet.group_title(groups[0]).startswith("4 threads in 4 processes (101, 102, 103, 104) at accept "
                                                   "(accept.py:20)")
    assert fleet.group_title(groups[1]).startswith("1 thread in 1 process (103) at process_order")


def test_a_different_line_is_another_group():
    other = stack_of(105, ("MainThread", [frame("run", 10), frame("accept", 21)]))
    groups = fleet.group_stacks({101: STACKS[101], 105: other})
    assert len(groups) == 2 and all(g.count == 1 for g in groups)


def test_fleet_answer_keeps_each_result_reports_errors_and_reads_as_groups():
    answers = {pid: (0.1, r, None) for pid, r in STACKS.items()}
    answers[106] = (0.2, None, FlightError("agent_gone", "the process exited"))
    r = fleet.assemble("stack", [101, 102, 103, 104, 106], answers, 100, 0.5)
    assert (r.answered, r.failed) == (4, 1)
    gone = r.processes[-1]
    assert gone.pid == 106 and gone.result is None and gone.error.code == "agent_gone"
    assert r.processes[0].result["pid"] == 101   # each process's own Result, as JSON
    text = TOOLS["stack"].text(r, False)
    assert text.splitlines()[0] == ("stack on 5 processes (workers of 100: 101, 102, 103, 104, 106): 4 answered, "
                                    "1 failed in 0.50s")
    assert "  pid 106: error [agent_gone] the process exited" in text
    assert "4 threads in 4 processes (101, 102, 103, 104) at accept (accept.py:20) [MainThread, worker]" in text
    assert text.count('File "/app/accept.py", line 20, in accept') == 1   # the common stack once
    # the structured answer validates against what the MCP server declares
    fleet.output_model(TOOLS["stack"]).model_validate(r.model_dump(mode="json"))


def test_target_strings_are_escaped_in_the_merged_text():
    evil = stack_of(107, ("\x1b[31mred", [frame("run", 1)]))
    r = fleet.assemble("stack", [107], {107: (0.1, evil, None)}, None, 0.1)
    text = TOOLS["stack"].text(r, False)
    assert "\x1b" not in text


def watch_of(pid, *times):
    base = dict(target="app.handle", kind="function", file="/app/app.py", line=1, mechanism="sys.monitoring",
                started=1.0, duration_s=1.0, seen=len(times), matched=len(times), captured=len(times), limit=10,
                stopped="deadline", expr="args")
    return WatchResult(**base, records=[{"time": t, "cost_ms": 1.5, "is_exp": t == 5.0, "thread": "T", "tid": 1,
                                         "view": None} for t in times])


def test_captures_form_one_timeline_tagged_with_their_pid():
    results = {201: watch_of(201, 1.0, 4.0), 202: watch_of(202, 2.0, 5.0, 3.0)}
    recs = fleet.timeline(results)
    assert [(x.pid, x.time, x.index) for x in recs] == [(201, 1.0, 0), (202, 2.0, 0), (202, 3.0, 2),
                                                      (201, 4.0, 1), (202, 5.0, 1)]
    assert [x.failed for x in recs] == [False, False, False, False, True]
    r = fleet.assemble("watch", [201, 202], {p: (0.1, x, None) for p, x in results.items()}, None, 1.0)
    text = TOOLS["watch"].text(r, False)
    titles = [line for line in text.splitlines() if line.startswith("[pid ")]
    assert len(titles) == 5 and titles[0].startswith("[pid 201] ✓") and titles[-1].startswith("[pid 202] ✗")
    assert "watch: 5 calls captured in 2 of 2 processes" in text
    fleet.output_model(TOOLS["watch"]).model_validate(r.model_dump(mode="json"))


def stats(calls, failures, avg, p95, mx):
    return {"calls": calls, "successes": calls - failures, "failures": failures, "avg_ms": avg, "p50_ms": avg,
            "p95_ms": p95, "max_ms": mx}


class _Monitor:   # the part of MonitorResult the merge reads
    def __init__(self, s):
        self.total = type("T", (), {"stats": type("S", (), s)})()


def test_monitor_figures_sum_calls_and_weight_the_mean():
    f = fleet.monitor_figures({1: _Monitor(stats(10, 1, 2.0, 5.0, 9.0)), 2: _Monitor(stats(30, 0, 4.0, 7.0, 8.0)),
                               3: _Monitor(stats(0, 0, None, None, None))})
    assert f.total == {"calls": 40, "failures": 1, "avg_ms": 3.5, "p95_ms": 7.0, "max_ms": 9.0}
    assert f.by_pid[2]["calls"] == 30 and f.by_pid[3]["avg_ms"] is None


def mem_of(rss, rows):
    return MemResult(action="summary", limit=2, order="descending", rss_bytes=rss, tracked_objects=100,
                     tracked_bytes=1000, types_total=3, types=[{"type": t, "count": c, "size": s} for t, c, s in rows],
                     scan_ms=1.0, longest_hold_ms=1.0)


def test_mem_figures_sum_sizes_and_types_with_the_split():
    f, types = fleet.mem_figures({1: mem_of(2**20, [("dict", 5, 500), ("list", 1, 10)]),
                                  2: mem_of(3 * 2**20, [("dict", 2, 200), ("Order", 9, 900)])})
    assert f.total == {"rss_bytes": 4 * 2**20, "tracked_objects": 200, "tracked_bytes": 2000}
    assert f.by_pid[2]["rss_bytes"] == 3 * 2**20
    assert types == [{"type": "Order", "count": 9, "size": 900, "processes": 1},
                     {"type": "dict", "count": 7, "size": 700, "processes": 2}]   # limit 2, largest first


def test_params_take_exactly_one_of_pid_pids_workers_of():
    P = TOOLS["stack"].params
    assert P(pid=1).pid == 1 and P(pids=[1, 2]).pids == [1, 2] and P(workers_of=3).workers_of == 3
    for bad in ({}, {"pid": 1, "pids": [2]}, {"pid": 1, "workers_of": 2}, {"pids": []}):
        with pytest.raises(ValidationError):
            P(**bad)
    assert "pids" not in P(pids=[1]).agent_args() and "workers_of" not in P(workers_of=1).agent_args()
    assert "pids" not in TOOLS["getglobal"].params.model_fields   # only the fleet tools


def test_command_line_spellings():
    assert fleet.cli_target("11,12", None) == {"pids": [11, 12]}
    assert fleet.cli_target(None, 10) == {"workers_of": 10}
    assert fleet.cli_target("11", None) is None
    for target, master in (("11,x", None), ("11", 10)):
        with pytest.raises(FlightError):
            fleet.cli_target(target, master)
    with pytest.raises(FlightError, match="one process at a time"):
        fleet.cli_params(TOOLS["getglobal"], None, {"pids": [1]})
