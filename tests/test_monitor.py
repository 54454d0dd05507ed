"""monitor on real targets, every pyenv Python 3.8-3.13: on the tenants service (two slow tenants of
twelve, one that always raises) the counts, failures and slow values per cycle; the filter gate; the
bound on distinct --by values; bad input refused with its cause; progress over MCP, one per cycle;
Ctrl-C ending an "until I stop" monitor with the cycle it cut short; and after each, the function
running its own code again with no instrumentation left."""
import json
import re
import signal
import subprocess
import sys
import time

import anyio
import pytest

from flight_mcp.attach.bootstrap import AGENT_MODULE, agent_build

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)

TENANTS = {"acme", "globex", "initech", "hooli", "stark", "wayne", "umbrella", "wonka", "tyrell", "cyberdyne",
           "soylent", "massive"}
SLOW = {"initech", "umbrella"}   # sleep 25-30 ms; the others 2 ms
FAILING = "hooli"                # raises on every call


def run(pid, cmd, *extra):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color")
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


def code_id(pid):
    out = run(pid, "getglobal __main__ Service handle -e 'id(target.__code__)'", "--allow-mutating")
    return re.search(r"VALUE:\s+(\d+)", out).group(1)


def instrumented(pid, version):
    """Whether flight-mcp instrumentation is active in the target: a sys.monitoring tool (>= 3.12), the
    agent's frame evaluator installed (<= 3.11), or with the code-trampoline fallback a hook function
    among Service.handle's code constants."""
    if tuple(map(int, version.split("."))) >= (3, 12):
        return "flight-mcp" in run(pid, "getglobal sys monitoring -e '[target.get_tool(i) for i in range(6)]'",
                                   "--allow-mutating")
    r = flight_cli("--allow-mutating", str(pid), "--cmd", f"getglobal {AGENT_MODULE}_{agent_build()} instrument -e "
                   "\"target._hook['module'] is not None and target._hook['module'].active()\"", "--no-color")
    if re.search(r"VALUE:\s+True", r.stdout):
        return True
    out = run(pid, "getglobal __main__ Service handle -e '[type(c).__name__ for c in target.__code__.co_consts]' "
                   "-x 2", "--allow-mutating")
    return "function" in out


def monitor_text(r):
    from flight_mcp.tools import monitor
    return monitor.TOOL.text(monitor.TOOL.result.model_validate(r), False)


def check_cycle(c):
    s = c["stats"]
    assert s["calls"] > 0 and s["successes"] + s["failures"] == s["calls"], c
    assert s["p50_ms"] <= s["p95_ms"] <= s["max_ms"], s
    keys = {k["key"].strip("'\""): k for k in c["keys"]}
    assert all(k["kind"] == "value" for k in c["keys"]) and set(keys) == TENANTS, c["keys"]
    assert sum(k["calls"] for k in c["keys"]) == s["calls"]
    assert sum(k["failures"] for k in c["keys"]) == s["failures"] == keys[FAILING]["calls"]
    assert keys[FAILING]["successes"] == 0
    assert all(k["failures"] == 0 for name, k in keys.items() if name != FAILING)
    by_p50 = sorted(keys, key=lambda name: keys[name]["p50_ms"])
    assert set(by_p50[-2:]) == SLOW, [(n, keys[n]["p50_ms"]) for n in by_p50]
    assert all(keys[n]["p50_ms"] >= 20 for n in SLOW)
    return keys


@pytest.mark.parametrize("version", version_params())
def test_monitor_counts_failures_and_slow_tenants(spawn, version):
    t = spawn(version, "tenants")
    before = code_id(t.pid)
    out = run(t.pid, "monitor __main__ Service handle -c 1 -n 2 --by 'args[0]'", "--json")
    r = json.loads(out)
    assert r["target"] == "__main__.Service.handle" and r["by"] == "args[0]" and r["cycle_s"] == 1
    assert r["captured"] == 2 and r["limit"] == 2 and r["stopped"] == "limit" and r["cycles_dropped"] == 0
    assert [c["index"] for c in r["cycles"]] == [1, 2] and not any(c["partial"] for c in r["cycles"])
    for c in r["cycles"]:
        check_cycle(c)
        assert c["end"] > c["start"] and c["duration_s"] >= 1
    total = check_cycle(r["total"])
    assert r["total"]["stats"]["calls"] == sum(c["stats"]["calls"] for c in r["cycles"]) == r["matched"]
    assert r["seen"] >= r["matched"]
    assert total[FAILING]["failures"] == sum(k["failures"] for c in r["cycles"] for k in c["keys"])
    assert r["total"]["other_keys"] == 0 and not r["total"]["keys_overflow"]

    # the text: Arthas's columns, a row per value, the slow ones marked and named
    text = run(t.pid, "monitor __main__ Service handle -c 1 -n 1 --by 'args[0]'")
    header = text.splitlines()[1].split()
    assert header == ["timestamp", "class", "method", "by", "total", "success", "fail", "avg-rt(ms)", "p50(ms)",
                      "p95(ms)", "max(ms)", "fail-rate"], text
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^ +'(\w+)' .*$", text, re.M)}
    assert set(rows) == TENANTS, text
    assert {name for name, row in rows.items() if row.endswith("◀ slow")} == SLOW, text
    cells = rows[FAILING].split()   # key, total, success, fail, avg, p50, p95, max, fail-rate
    assert cells[2] == "0" and cells[3] == cells[1] != "0" and cells[-1] == "100.00%", rows[FAILING]
    assert all(row.split()[3] == "0" and row.split()[8] == "0.00%" for name, row in rows.items() if name != FAILING)
    assert re.search(r"^slow values of args\[0\] .*'(initech|umbrella)'.*'(initech|umbrella)'", text, re.M), text
    assert "monitor __main__.Service.handle: 1 of 1 cycle of 1s;" in text
    assert not instrumented(t.pid, version) and code_id(t.pid) == before
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_monitor_filter_gate_and_bounded_keys(spawn, version):
    t = spawn(version, "tenants")
    # a filter judged at the call's start: hooli's calls are not counted at all
    r = json.loads(run(t.pid, "monitor __main__ Service handle -c 0.5 -n 1 -f 'args[0] != \"hooli\"' "
                              "--by 'args[0]'", "--json"))
    [c] = r["cycles"]
    assert c["stats"]["failures"] == 0 and c["stats"]["calls"] > 0
    assert FAILING not in {k["key"].strip("'\"") for k in c["keys"]} and r["seen"] > r["matched"]
    # a filter judged at the end (cost): only the slow calls, without --by
    r = json.loads(run(t.pid, "monitor __main__ Service handle -c 0.5 -n 1 -f 'cost > 15'", "--json"))
    [c] = r["cycles"]
    assert c["keys"] == [] and c["stats"]["calls"] > 0 and c["stats"]["failures"] == 0
    assert c["stats"]["max_ms"] >= c["stats"]["p50_ms"] >= 20
    # a value per call (request ids): 20 shown, the rest in (other), said in the text
    text = run(t.pid, "monitor __main__ Service handle -c 0.5 -n 2 --by 'args[1]'")
    assert "the 20 values with the most calls are shown;" in text and "are counted in (other)." in text, text
    r = json.loads(run(t.pid, "monitor __main__ Service handle -c 0.5 -n 1 --by 'args[1]'", "--json"))
    [c] = r["cycles"]
    kinds = [k["kind"] for k in c["keys"]]
    assert kinds == ["value"] * 20 + ["other"], kinds
    assert c["other_keys"] > 0 and sum(k["calls"] for k in c["keys"]) == c["stats"]["calls"]
    # more cycles than are kept: the latest 100 in the answer, the total covers every one
    r = json.loads(run(t.pid, "monitor __main__ Service handle -c 0.1 -n 103", "--json"))
    assert r["captured"] == 103 and r["cycles_dropped"] == 3 and len(r["cycles"]) == 100
    assert [c["index"] for c in r["cycles"]] == list(range(4, 104))
    assert r["total"]["stats"]["calls"] == r["matched"] > sum(c["stats"]["calls"] for c in r["cycles"])
    assert "(the first 3 cycles are not kept; the total covers them)" in monitor_text(r)
    # a --by that raises: those calls in the (by failed) row, the failure reported once
    text = run(t.pid, "monitor __main__ Service handle -c 0.5 -n 1 --by 'args[1] // 0'")
    assert re.search(r"^ +\(by failed\) +\d+", text, re.M), text
    assert text.count("warning:") == 1 and "--by expression 'args[1] // 0' raised ZeroDivisionError" in text
    assert not instrumented(t.pid, version)
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_monitor_bad_input_is_refused(spawn, version):
    t = spawn(version, "tenants")
    r = flight_cli(str(t.pid), "--cmd", "monitor __main__ Service handle -c 1 -n 1 --by 'args[0'")
    assert r.returncode == 1 and "syntax error in --by expression 'args[0'" in r.stderr, r.stderr
    assert "[bad_expression]" in r.stderr
    r = flight_cli(str(t.pid), "--cmd", "monitor __main__ Service handle -c 1 -n 1 --by \"__import__('os').getpid()\"")
    assert r.returncode == 1 and "read-only mode refused" in r.stderr and "--by expression" in r.stderr, r.stderr
    r = flight_cli(str(t.pid), "--cmd", "monitor __main__ Service handle -c 5 -n 3 --timeout 10")
    assert r.returncode != 0 and "--timeout 10s is shorter than the 3 cycles of 5s" in r.stderr, r.stderr
    r = flight_cli(str(t.pid), "--cmd", "monitor __main__ Service nope -c 1 -n 1")
    assert r.returncode == 1 and "'nope' not found" in r.stderr, r.stderr
    assert not instrumented(t.pid, version)
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_monitor_over_mcp_progress_per_cycle(spawn, version):
    t = spawn(version, "tenants")
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async def go():
        async with mcp_session() as s:
            bad = await s.call_tool("monitor", {"pid": t.pid, "module": "__main__", "cls": "Service",
                                                "method": "handle", "cycle_s": 2, "limit": 3, "timeout_s": 5})
            good = await s.call_tool("monitor", {"pid": t.pid, "module": "__main__", "cls": "Service",
                                                 "method": "handle", "cycle_s": 0.5, "limit": 3, "by": "args[0]"},
                                     progress_callback=on_progress)
            return bad, good

    bad, r = anyio.run(go)
    assert bad.is_error and "timeout_s 5s is shorter than the 3 cycles of 2s" in text_of(bad), text_of(bad)
    assert not r.is_error, text_of(r)
    out = r.structured_content
    assert out["captured"] == 3 and len(out["cycles"]) == 3 and out["stopped"] == "limit"
    assert [p[0] for p in progress] == [1, 2, 3] and all(p[1] == 3 for p in progress), progress
    assert all(re.match(r"cycle \d/3: \d+ calls, \d+ failed, avg ", p[2]) for p in progress), progress
    assert "◀ slow" in text_of(r)
    assert not instrumented(t.pid, version)


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_ctrl_c_ends_an_endless_monitor_with_its_cycles(spawn, version):
    t = spawn(version, "tenants")
    before = code_id(t.pid)
    cli = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd",
                            "monitor __main__ Service handle -c 1 -n 100000000", "--no-color"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not instrumented(t.pid, version):
            assert time.monotonic() < deadline and cli.poll() is None, "the monitor never instrumented the function"
        time.sleep(1.5)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=20)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "stopped because it was cancelled" in out and "(cut short)" in out, out
    assert re.search(r"^monitor __main__.Service.handle: \d+ of 100000000 cycles of 1s; \d+ calls seen", out, re.M)
    assert not instrumented(t.pid, version) and code_id(t.pid) == before
    assert t.alive()
