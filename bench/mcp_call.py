"""A warm MCP call, and where its time goes (issue 13: a warm tools/call in at most 5 ms).

Not a test: through the official MCP SDK client over stdio (a `flight-mcp --stdio` server process of its
own), on an idle target (tests/targets/idle.py) that the server has attached already, prints the median,
p90 and minimum in ms of
- ping: the SDK's stdio round trip with no tool,
- a tools/call of a tool that does nothing on the SDK's own stock server (MCPServer over its stdio
  transport; a small structured answer the client checks against its outputSchema, as ours): the floor
  of any tools/call through this SDK on this machine, our server's included,
- tools/call getglobal __main__ CONFIG, and tools/call stack,
taking turns (the load of a shared machine changes by the second); the CPU ms each process spends per
call (client, server, target; batches of one kind, read from /proc); then where each call's time went:
- in the server process, ms per phase, measured by timers this script puts around the server's steps
  (the server runs as `python bench/mcp_call.py --serve`, which installs them and then serves exactly
  as `flight-mcp --stdio` does), the agent's own time from the facts its answers carry (when Python ran
  for the request, when it replied: CLOCK_MONOTONIC, one clock for every process);
- in the client: the SDK client's validation of structuredContent against the tool's outputSchema,
- and the rest: both ends' transports and event loops.

--baseline DIR: the same, side by side, with the flight-mcp of another checkout (e.g. `git archive main
flight_mcp skills | tar -x -C DIR`, plus the built .so files copied in) as a second server on a second
target, the calls of both taking turns.

Usage: python bench/mcp_call.py [-n CALLS] [--version 3.12] [--baseline DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# --serve: the flight_mcp of the tree to measure (FLIGHT_BENCH_TREE, a baseline's), else this one's
sys.path.insert(0, os.environ.get("FLIGHT_BENCH_TREE") or str(ROOT))

# ---- the server side: timers around the server's steps ------------------------------------------

_marks: list[tuple[str, float]] = []   # (phase boundary, time.monotonic()) of the call under way


def _mark(name: str, at: float | None = None) -> None:
    # time.monotonic: CLOCK_MONOTONIC, the clock of the agent's "sent"/"replied" too (one for every process)
    _marks.append((name, time.monotonic() if at is None else at))


def _wrap(owner, attr: str, before: str | None, after: str | None) -> None:
    inner = getattr(owner, attr)

    def timed(*a, **k):
        if before:
            _mark(before)
        try:
            return inner(*a, **k)
        finally:
            if after:
                _mark(after)
    setattr(owner, attr, timed)


def serve(out_path: str) -> None:
    """`flight-mcp --stdio` with timers; each tools/call's marks appended to out_path as a JSON line."""
    import mcp_types
    from mcp.server import stdio
    from pydantic import BaseModel

    from flight_mcp import server
    from flight_mcp.attach import client
    from flight_mcp.tools import base

    out = open(out_path, "a", buffering=1)
    tool_name = [None]

    # the request's line is in the server's loop: JSON-RPC parsing starts
    adapter = mcp_types.jsonrpc_message_adapter

    class Adapter:
        def __getattr__(self, name):
            return getattr(adapter, name)

        def validate_json(self, data, *a, **k):
            _marks.clear()
            _mark("line in")
            return adapter.validate_json(data, *a, **k)

    stdio.types = type(sys)("mcp_types_timed")
    stdio.types.__dict__.update(mcp_types.__dict__, jsonrpc_message_adapter=Adapter())

    call_tool = server._Server.call_tool

    async def timed_call_tool(self, name, *a, **k):
        _mark("call_tool in")
        tool_name[0] = name
        return await call_tool(self, name, *a, **k)

    server._Server.call_tool = timed_call_tool
    for name in ("parse_arguments", "check_arguments"):   # (its name before)
        if hasattr(server, name):
            _wrap(server, name, None, "arguments checked")
    _wrap(base.Tool, "invoke", "on worker thread", "invoke done")
    _wrap(client.AgentClient, "request", "agent request", "agent answered")
    _wrap(base.Tool, "text", "back in loop", "text rendered")
    try:
        from mcp.server.mcpserver.utilities import func_metadata
        _wrap(func_metadata.FuncMetadata, "convert_result", "handler returned", "output validated")
    except ImportError:
        pass

    sent = [0.0]

    class Json:   # the agent's answer says when Python ran for the request and when it replied
        @staticmethod
        def dumps(msg):
            if "sent" in msg:
                sent[0] = msg["sent"]
            return json.dumps(msg)

        @staticmethod
        def loads(data):
            msg = json.loads(data)
            if "result" in msg and "replied" in msg and _marks and _marks[-1][0] == "agent request":
                _mark("request sent", sent[0])
                _mark("agent runs it", sent[0] + msg["started"]["queued_s"])
                _mark("agent replied", msg["replied"])
                _mark("answer read")
            return msg

    client.json = Json

    dump_json = BaseModel.model_dump_json

    def timed_dump_json(self, *a, **k):
        if type(self).__name__ == "JSONRPCResponse" and _marks:
            _mark("response built")
            s = dump_json(self, *a, **k)
            _mark("response serialized")
            return s
        return dump_json(self, *a, **k)

    BaseModel.model_dump_json = timed_dump_json

    def written():
        if _marks and _marks[-1][0] == "response serialized":
            _mark("in the pipe")
            if any(name == "call_tool in" for name, _ in _marks):   # a tools/call (not a ping)
                out.write(json.dumps({"tool": tool_name[0], "marks": _marks}) + "\n")
            _marks.clear()

    flush = stdio._UnownedTextWrapper.flush

    def timed_flush(self):   # the SDK's stdio streams: a worker thread writes, then flushes
        flush(self)
        written()

    stdio._UnownedTextWrapper.flush = timed_flush
    try:
        from flight_mcp import mcp_stdio
    except ImportError:   # a flight-mcp without it
        pass
    else:
        write = mcp_stdio._Writer.write

        async def timed_write(self, text):   # the loop writes at once (marked before: the client it wakes
            # may take the CPU from this process right after the write, before a mark could be taken)
            written()
            await write(self, text)

        mcp_stdio._Writer.write = timed_write
    server.serve_stdio()


# ---- the client side ------------------------------------------------------------------------------

CALLS = {"getglobal": {"module": "__main__", "field": "CONFIG"}, "stack": {}}
KINDS = ["ping", "floor", *CALLS]   # floor: a no-op tool on the SDK's stock server (serve_floor)


def serve_floor() -> None:
    """The SDK's own floor for a tools/call: its stock server (MCPServer over its stdio transport) with one
    tool that does nothing and returns a small structured result (an outputSchema the client checks, as
    ours), so what a tools/call costs the SDK's client, server and pipes alone is measured beside ours."""
    from pydantic import BaseModel

    from mcp.server.mcpserver import MCPServer

    class Answer(BaseModel):
        target: str
        value: str

    app = MCPServer("floor")

    def noop(pid):
        """Nothing: answers at once."""
        return Answer(target=str(pid), value="{}")

    noop.__annotations__ = {"pid": int, "return": Answer}   # objects, not this module's postponed strings
    app.tool(structured_output=True)(noop)
    app.run("stdio")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


class Server:
    """One `flight-mcp --stdio` (with timers) of a tree, its own target, and what was measured."""

    def __init__(self, label: str, tree: Path, python: str):
        from tests.conftest import TARGETS_DIR
        self.label, self.tree = label, tree
        self.target = subprocess.Popen([python, "-u", str(TARGETS_DIR / "idle.py")], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
        assert self.target.stdout.readline().strip() == "READY"
        fd, self.marks = tempfile.mkstemp(prefix="mcp-call-phases-", suffix=".jsonl")
        os.close(fd)
        self.took: dict[str, list[float]] = defaultdict(list)
        self.validation: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = {}
        self.session = None
        self.process = None

    def params(self):
        from mcp import StdioServerParameters
        env = dict(os.environ, FLIGHT_BENCH_TREE=str(self.tree), PYTHONPATH=str(self.tree))
        return StdioServerParameters(command=sys.executable, args=[str(Path(__file__).resolve()), "--serve",
                                                                   self.marks], env=env, cwd=str(self.tree))

    async def call(self, kind: str) -> float:
        t0 = time.perf_counter()
        if kind == "ping":
            await self.session.send_ping()
        elif kind == "floor":   # the SDK's stock server, a tool that does nothing (serve_floor)
            r = await self.floor.call_tool("noop", {"pid": self.target.pid})
            assert not r.is_error, r.content
        else:
            r = await self.session.call_tool(kind, {"pid": self.target.pid, **CALLS[kind]})
            assert not r.is_error, r.content
        return (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self.target.kill()
        self.target.wait()
        os.unlink(self.marks)


async def measure(servers: list[Server], n: int) -> None:
    import psutil
    from contextlib import AsyncExitStack

    from mcp import ClientSession, stdio_client

    validate = ClientSession.validate_tool_result
    validated: list[float] = []

    async def timed_validate(self, name, result):
        t0 = time.perf_counter()
        try:
            return await validate(self, name, result)
        finally:
            validated.append((time.perf_counter() - t0) * 1000)

    ClientSession.validate_tool_result = timed_validate
    async with AsyncExitStack() as stack:
        from mcp import StdioServerParameters
        floor_read, floor_write = await stack.enter_async_context(stdio_client(StdioServerParameters(
            command=sys.executable, args=[str(Path(__file__).resolve()), "--serve-floor"])))
        floor = await stack.enter_async_context(ClientSession(floor_read, floor_write))
        await floor.initialize()
        await floor.list_tools()
        for srv in servers:
            before = {c.pid for c in psutil.Process().children()}
            read, write = await stack.enter_async_context(stdio_client(srv.params()))
            srv.session = await stack.enter_async_context(ClientSession(read, write))
            srv.floor = floor
            srv.process = next(c for c in psutil.Process().children() if c.pid not in before)
            await srv.session.initialize()
            await srv.session.list_tools()
            for kind in KINDS:   # attach, and warm every path once
                await srv.call(kind)
        for _ in range(n):
            for kind in KINDS:
                for srv in servers:
                    validated.clear()
                    srv.took[kind].append(await srv.call(kind))
                    srv.validation[kind].append(sum(validated))
        # CPU ms per call of each process, by kind: batches (the counters are per process, in 10 ms ticks)
        me = psutil.Process()
        batch = max(n // 2, 20)
        for kind in KINDS:
            for srv in servers:
                procs = (me, srv.process, psutil.Process(srv.target.pid))
                before = [sum(p.cpu_times()[:2]) for p in procs]
                for _ in range(batch):
                    await srv.call(kind)
                after = [sum(p.cpu_times()[:2]) for p in procs]
                srv.cpu[kind] = [(b - a) * 1000 / batch for a, b in zip(before, after)]


def phases(path: str, n: int) -> dict[str, dict[str, float]]:
    """tool -> {phase: median ms} over the tools/calls of the interleaved rounds (the first n after the
    warm-up call; the CPU batches come after them)."""
    by_tool: dict[str, list[list]] = defaultdict(list)
    for row in map(json.loads, Path(path).read_text().splitlines()):
        by_tool[row["tool"]].append(row["marks"])
    out = {}
    for tool, calls in by_tool.items():
        steps: dict[str, list[float]] = defaultdict(list)
        names: list[str] = []
        for marks in calls[1:n + 1]:
            seen: dict[str, int] = defaultdict(int)
            for (a, ta), (b, tb) in zip(marks, marks[1:]):
                key = f"{a} -> {b}"
                seen[key] += 1
                if seen[key] > 1:
                    key += f" #{seen[key]}"
                if key not in names:
                    names.append(key)
                steps[key].append((tb - ta) * 1000)
            steps["TOTAL line in -> in the pipe"].append((marks[-1][1] - marks[0][1]) * 1000)
        names.append("TOTAL line in -> in the pipe")
        out[tool] = {k: statistics.median(steps[k]) for k in names}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--calls", type=int, default=200, help="calls of each kind (taking turns)")
    ap.add_argument("--version", default="3.12", help="the target's Python")
    ap.add_argument("--baseline", metavar="DIR", help="a flight-mcp checkout to measure side by side")
    ap.add_argument("--serve", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return 0
    if a.serve_floor:
        serve_floor()
        return 0
    import anyio

    from tests.conftest import PYTHONS

    trees = [("this", ROOT)] + ([("baseline", Path(a.baseline).resolve())] if a.baseline else [])
    for _, tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "flight_mcp")], check=True)
    servers: list[Server] = []
    try:
        for label, tree in trees:
            servers.append(Server(label, tree, PYTHONS[a.version]))
        anyio.run(measure, servers, a.calls)
        breakdown = {srv.label: phases(srv.marks, a.calls) for srv in servers}
    finally:
        for srv in servers:
            srv.close()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"warm MCP calls, ms over {a.calls} calls of each kind{' per server' if a.baseline else ''} (target "
          f"Python {a.version}, load average {load}; servers with phase timers)")
    print(f"  {'':<40} {'median':>7} {'p90':>7} {'min':>7} {'-ping':>7}   CPU ms per call: client server target")
    for kind in KINDS:
        for srv in servers:
            xs, floor = srv.took[kind], statistics.median(srv.took["ping"])
            label = {"ping": "ping (no tool)", "floor": "tools/call no-op, SDK's own server"}.get(
                kind, f"tools/call {kind}") + (f" [{srv.label}]" if a.baseline else "")
            over = "" if kind == "ping" else f"{statistics.median(xs) - floor:+7.2f}"
            print(f"  {label:<40} {statistics.median(xs):7.2f} {pct(xs, 0.9):7.2f} {min(xs):7.2f} {over:>7}   "
                  f"{'':<16}" + ("(another server)" if kind == "floor" else "".join(f"{x:6.2f} " for x in srv.cpu[kind])))
    for kind in CALLS:
        print(f"  client: outputSchema validation of {kind:<10}" + "".join(
            f" {statistics.median(srv.validation[kind]):6.2f}" + (f" [{srv.label}]" if a.baseline else "")
            for srv in servers))
    for tool in CALLS:
        print(f"\n  {tool}: server-side phases, median ms" + (" (" + ", ".join(s.label for s in servers) + ")"
                                                            if a.baseline else ""))
        names = list(dict.fromkeys(k for srv in servers for k in breakdown[srv.label].get(tool, {})))
        names.sort(key=lambda k: k.startswith("TOTAL"))
        for name in names:
            row = "".join(f" {breakdown[srv.label][tool][name]:7.3f}" if name in breakdown[srv.label][tool]
                          else f" {'-':>7}" for srv in servers)
            print(f"    {name:<52}{row}")
        for srv in servers:
            total = breakdown[srv.label][tool]["TOTAL line in -> in the pipe"]
            print(f"    client-side median {statistics.median(srv.took[tool]):.2f}: {total:.2f} in the server, "
                  f"{statistics.median(srv.took[tool]) - total:.2f} in the client and the transports"
                  + (f" [{srv.label}]" if a.baseline else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
