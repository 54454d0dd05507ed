"""watch on real targets, every pyenv Python 3.8-3.13: the CLI layout, expressions and their
failures, exceptions with tracebacks, two clients on one method, MCP progress, and a server
killed with SIGKILL mid-watch (the target keeps running with its original code)."""
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

TITLE = re.compile(r"^([✓✗]) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} method=(\S+) cost=(\d+\.\d{6})ms "
                   r"is_exp=(True|False) thread=(\S+)(?: (?:returned|raised) at line \d+)?"
                   r"(?: called from \S+ \(\S+:\d+\))? result=\{$")


def run(pid, cmd, *extra):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color")
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


def records(out):
    """Each record as (title match, {LABEL: text}) from the text layout."""
    found = []
    label = None
    for line in out.splitlines():
        m = TITLE.match(line)
        if m:
            found.append((m, {}))
            continue
        if not found or line == "}" or line.startswith("─"):
            label = None
            continue
        lm = re.match(r"^  ([A-Z_]+):\s+(.*)$", line)
        if lm:
            label = lm.group(1)
            found[-1][1][label] = lm.group(2)
        elif label:
            found[-1][1][label] += "\n" + line.strip()
    return found


@pytest.mark.parametrize("version", version_params())
def test_watch_values_exceptions_and_json(spawn, version):
    t = spawn(version, "demo")
    out = run(t.pid, "watch __main__ OrderService process_order -n 2 -f 'args[0] > 0'")
    recs = records(out)
    assert len(recs) == 2, out
    for m, rows in recs:
        assert m.group(1) == "✓" and m.group(2) == "__main__.OrderService.process_order" and m.group(4) == "False"
        assert m.group(5) == "order-worker" and float(m.group(3)) >= 75
        assert rows["EXPR"] == "args,kwargs" and rows["TYPE"] == "<class 'tuple'>"
    assert "2 of 2 captured" in out and "stopped because the limit of 2 was reached" in out

    # return value and cost; target is the instance, args exclude it
    out = run(t.pid, "watch __main__ OrderService process_order -n 1 --expr 'return_obj, cost, target.name, "
                     "len(args)' -f 'cost > 50'")
    [(m, rows)] = records(out)
    assert "'order_id'" in rows["VALUE"] or '"order_id"' in rows["VALUE"]
    assert '"main-service"' in rows["VALUE"] or "'main-service'" in rows["VALUE"]
    assert re.search(r"\n2$", rows["VALUE"].replace(")", "").strip()), rows["VALUE"]

    # -e: only calls that raised, with the traceback (no agent frames in it)
    out = run(t.pid, "watch __main__ OrderService process_order -n 1 -e --expr args[0]")
    [(m, rows)] = records(out)
    assert m.group(1) == "✗" and m.group(4) == "True"
    assert int(rows["VALUE"]) < 0
    tb = rows["EXCEPTION"]
    assert tb.startswith("Traceback (most recent call last):") and "in validate" in tb
    assert tb.endswith("ValueError: negative order id %d" % int(rows["VALUE"])), tb
    assert "flight_mcp/agent" not in tb

    # -r: one-line str; --json: the Result model
    out = run(t.pid, "watch __main__ OrderService apply_discount -n 1 -r --expr return_obj")
    [(m, rows)] = records(out)
    assert re.fullmatch(r"\d+\.\d+", rows["VALUE"]), rows
    out = run(t.pid, "watch __main__ compute -n 2 --expr 'args[0], return_obj'", "--json")
    result = json.loads(out)
    assert result["captured"] == 2 and result["stopped"] == "limit" and result["mechanism"]
    rec = result["records"][0]
    assert rec["view"]["type"] == "tuple" and rec["is_exp"] is False and rec["thread"] == "order-worker"
    first, ret = (c["view"]["repr"] for c in rec["view"]["children"])
    assert int(ret) == 2 * int(first)
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_watch_expression_failures(spawn, version):
    t = spawn(version, "demo")
    r = flight_cli(str(t.pid), "--cmd", "watch __main__ compute --expr 'args[0' -n 1")
    assert r.returncode == 1 and "syntax error in --expr expression 'args[0'" in r.stderr, r.stderr
    # a name nothing defines: refused before attaching (exit 2)
    r = flight_cli(str(t.pid), "--cmd", "watch __main__ compute --expr 'nosuch + 1' -n 2")
    assert r.returncode == 2 and "'nosuch' is not defined" in r.stderr, r.stderr
    # IndexError in --expr: every capture says so, the summary reports it once
    out = run(t.pid, "watch __main__ compute --expr 'args[5] + 1' -n 2")
    recs = records(out)
    assert len(recs) == 2 and all(rows["WATCH_FAIL_INFO"].startswith("IndexError") for _, rows in recs), out
    assert out.count("warning:") == 1 and "(2 calls)" in out
    # a filter that raises on some calls (compute(0) every third call): those do not match
    out = run(t.pid, "watch __main__ compute --expr args -f '1 / args[0]' -n 3")
    assert len(records(out)) == 3
    assert "raised ZeroDivisionError" in out and out.count("warning:") == 1
    # unknown names and C functions: clear errors, nothing instrumented
    r = flight_cli(str(t.pid), "--cmd", "watch __main__ OrderService nope")
    assert r.returncode == 1 and "'nope' not found" in r.stderr
    r = flight_cli(str(t.pid), "--cmd", "watch time sleep -n 1")
    assert r.returncode == 1 and "built-in (C) function" in r.stderr
    r = flight_cli(str(t.pid), "--cmd", "watch __main__ compute -x lots")
    assert r.returncode == 2 and "expand" in r.stderr
    # a deadline with nothing matching says what was instrumented and what happened
    out = run(t.pid, "watch __main__ compute -f 'args[0] > 100' -n 1 --timeout 1")
    assert "0 of 1 captured" in out and "deadline" in out and "no call passed the filter" in out
    assert not instrumented(t.pid, version)   # the deadline removed it
    assert t.alive()


def instrumented(pid, version):
    """Whether flight-mcp instrumentation is active on OrderService.process_order, read from the target:
    a sys.monitoring tool (>= 3.12), the agent's frame evaluator installed in the interpreter (<= 3.11),
    or, with its code-trampoline fallback, a hook object among the function's code constants."""
    if tuple(map(int, version.split("."))) >= (3, 12):
        out = run(pid, "getglobal sys monitoring -e '[target.get_tool(i) for i in range(6)]'", "--allow-mutating")
        return "flight-mcp" in out
    r = flight_cli("--allow-mutating", str(pid), "--cmd", f"getglobal {AGENT_MODULE}_{agent_build()} instrument -e "
                   "\"target._hook['module'] is not None and target._hook['module'].active()\"", "--no-color")
    if re.search(r"VALUE:\s+True", r.stdout):
        return True
    out = run(pid, "getglobal __main__ OrderService process_order "
                   "-e '[type(c).__name__ for c in target.__code__.co_consts]' -x 2", "--allow-mutating")
    return "function" in out


def cli_background(pid, cmd):
    return subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(pid), "--cmd", cmd, "--no-color"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))  # the host's side of a capture
def test_two_clients_one_method(spawn, version):
    t = spawn(version, "demo")
    assert not instrumented(t.pid, version)  # attached first: this test is about two clients, not two attaches
    long_watch = cli_background(t.pid, "watch __main__ OrderService process_order -n 12 -f 'args[0] > 0' "
                                       "--expr args[0] --timeout 60")
    traces = [cli_background(t.pid, "trace __main__ OrderService process_order -n 2 -f 'args[0] > 0' -d 2")
              for _ in range(2)]
    for trace in traces:
        out, err = trace.communicate(timeout=60)
        assert trace.returncode == 0, err
        assert out.count("🔍") == 2, out
        # each client records the whole tree, once (no second root, no missing children)
        children = re.findall(r"^[├└]─ \[[\d.]+ms\] ([\w.]+)", out, re.M)
        assert children == ["OrderService.validate", "OrderService.compute_price", "OrderService.save_to_db"] * 2, out
    # the traces ended and removed their probes; the watch keeps capturing to its limit
    out, err = long_watch.communicate(timeout=60)
    assert long_watch.returncode == 0, err
    assert "12 of 12 captured" in out and "limit" in out, out
    ids = [int(rows["VALUE"]) for _, rows in records(out)]
    assert ids == sorted(ids) and len(set(ids)) == 12
    assert not instrumented(t.pid, version)
    assert t.alive()


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))  # the host's side of a capture
def test_server_killed_mid_watch(spawn, version):
    t = spawn(version, "demo")
    assert not instrumented(t.pid, version)
    victim = cli_background(t.pid, "watch __main__ OrderService process_order -n 1000 --timeout 120")
    deadline = time.monotonic() + 30
    while not instrumented(t.pid, version):
        assert time.monotonic() < deadline, "the watch never instrumented the function"
        assert victim.poll() is None, victim.communicate()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    deadline = time.monotonic() + 5
    while instrumented(t.pid, version):
        assert time.monotonic() < deadline, "instrumentation still active after the server was killed"
        time.sleep(0.2)
    assert t.alive()
    out = run(t.pid, "watch __main__ OrderService process_order -n 1 -f 'args[0] > 0' --expr args[0]")
    assert "1 of 1 captured" in out


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))  # the host's side of a capture
def test_watch_over_mcp_with_progress(spawn, version):
    t = spawn(version, "demo")
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async def go():
        async with mcp_session() as s:
            return await s.call_tool("watch", {"pid": t.pid, "module": "__main__", "cls": "OrderService",
                                               "method": "process_order", "limit": 3,
                                               "filter_expr": "args[0] > 0", "expr": "return_obj"},
                                     progress_callback=on_progress)

    r = anyio.run(go)
    assert not r.is_error, text_of(r)
    out = r.structured_content
    assert out["captured"] == 3 and out["stopped"] == "limit" and out["seen"] >= 3
    assert [rec["view"]["type"] for rec in out["records"]] == ["dict"] * 3
    assert "EXPR:   return_obj" in text_of(r)
    assert [p[0] for p in progress] == [1, 2, 3] and all(p[1] == 3 for p in progress), progress
    assert "__main__.OrderService.process_order" in progress[0][2]
    assert not instrumented(t.pid, version)


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))  # the host's side of a capture
def test_ctrl_c_ends_watch_with_what_was_captured(spawn, version):
    t = spawn(version, "demo")
    assert not instrumented(t.pid, version)  # attach once before two processes talk to the agent
    cli = cli_background(t.pid, "watch __main__ OrderService process_order -n 1000 --expr args[0] --timeout 120")
    deadline = time.monotonic() + 30
    while not instrumented(t.pid, version):
        assert time.monotonic() < deadline and cli.poll() is None, "the watch never instrumented the function"
    # each capture is printed as it arrives (flight_profiler's users read them while the watch runs)
    first = [cli.stdout.readline() for _ in range(2)]
    assert first[0].startswith("─" * 60) and "method=__main__.OrderService.process_order" in first[1], first
    assert cli.poll() is None
    cli.send_signal(signal.SIGINT)
    # not communicate(): it reads the pipe's fd and would miss what readline() already buffered
    cli.wait(timeout=15)
    out, err = "".join(first) + cli.stdout.read(), cli.stderr.read()
    assert cli.returncode == 0, err
    assert "stopped because it was cancelled" in out, out
    # the summary counts every capture; each was shown once, as it arrived, and not again at the end
    captured = int(re.search(r"(\d+) of 1000 captured", out).group(1))
    assert out.count("method=__main__.OrderService.process_order") == captured, out[-3000:]
    assert not instrumented(t.pid, version)
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_mcp_cancellation_removes_instrumentation(spawn, version):
    t = spawn(version, "demo")
    assert not instrumented(t.pid, version)

    async def go():
        async with mcp_session() as s:
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()

                async def long_watch():
                    with scope:
                        await s.call_tool("watch", {"pid": t.pid, "module": "__main__", "cls": "OrderService",
                                                    "method": "process_order", "limit": 1000, "timeout_s": 120})
                tg.start_soon(long_watch)
                deadline = time.monotonic() + 30
                while not await anyio.to_thread.run_sync(instrumented, t.pid, version):
                    assert time.monotonic() < deadline, "the watch never instrumented the function"
                scope.cancel()   # the client abandons the call: notifications/cancelled
            # the session stays open: only the cancelled call's instrumentation goes
            deadline = time.monotonic() + 5
            while await anyio.to_thread.run_sync(instrumented, t.pid, version):
                assert time.monotonic() < deadline, "instrumentation still active after MCP cancellation"
                await anyio.sleep(0.2)

    anyio.run(go)
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_a_huge_limit_keeps_memory_bounded(spawn, version):
    """`-n 100000000` (flight_profiler's "until I stop") on a function called thousands of times a
    second: every call is counted, the answer keeps the latest 1000, and says so."""
    t = spawn(version, "trace_extras")
    r = flight_cli(str(t.pid), "--json", "--cmd", "watch __main__ fib -n 100000000 --expr args --timeout 4")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["limit"] == 100000000 and data["stopped"] == "deadline"
    assert data["captured"] > 2000, data["captured"]
    assert len(data["records"]) == data["captured"] - data["not_kept"] <= 1000
    assert t.alive()
