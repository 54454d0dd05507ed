"""list_processes: the Python processes one could attach to, with what each is doing (memory, CPU,
threads, state, age) and which are the workers of a server's master."""
from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Literal

import psutil

from pydantic import BaseModel, ConfigDict, Field

from ..attach import procs
from ..attach.bootstrap import RuntimeDir
from ..models import Fact, GilHolder
from ..session import gil
from . import gil_wait
from .base import Call, Cli, Tool


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built when first used (tools/base.py)
    filter: Annotated[str | None, Cli(positional=True)] = Field(
        None, description="Only processes whose command line contains this text (or whose pid it is), and the "
                          "workers of such a process.")


class ProcessInfo(Fact):
    pid: int
    ppid: int
    user: str
    python: str
    command: str
    agent_attached: bool
    parent_is_python: bool = Field(description="True for a worker whose parent is also Python "
                                   "(gunicorn/uvicorn/multiprocessing): attach to the worker that does the work.")
    role: Literal["master", "worker"] | None = Field(
        None, description="master: a Python process whose children are Python workers; worker: one of them. "
                          "Attach to a worker: that is where requests run.")
    server: str | None = Field(None, description="What the master runs, when its command line says "
                                                 "(gunicorn, uvicorn, celery, hypercorn, daphne, multiprocessing).")
    rss_mb: float | None = Field(None, description="Resident memory, MiB.")
    cpu_percent: float | None = Field(None, description="CPU use over a 0.2 s sample (100 = one core).")
    threads: int | None = None
    state: str | None = Field(None, description="running, sleeping, disk-sleep, stopped, tracing-stop, zombie...")
    uptime_s: float | None = Field(None, description="Seconds since the process started.")
    gil_stalled: bool | None = Field(None, description="True: a thread holds the GIL right now and keeps every other "
                                     "one waiting (the agent could not run a trivial request within the stall "
                                     "budget); None: not known (only a process with the agent attached is asked).")
    gil_holder: GilHolder | None = Field(None, description="With gil_stalled: the thread holding the GIL, read from "
                                                           "outside without stopping the process.")


class ListResult(Fact):
    processes: list[ProcessInfo]
    left_out: int = Field(0, description="Python processes of flight-mcp not listed: this server's or CLI's "
                                         "parents and children, other flight-mcp servers and CLIs.")


SERVERS = ("gunicorn", "uvicorn", "celery", "hypercorn", "daphne", "multiprocessing")
CPU_SAMPLE_S = 0.2


def run(p: ListParams, call: Call) -> ListResult:
    me = os.getpid()   # never listed, nor counted as left out
    found = [x for x in procs.list_python() if x.pid != me]
    if p.filter:   # the matches, and the workers of a matched master (`-c from multiprocessing...`)
        matched = {x.pid for x in found if p.filter in " ".join(x.cmdline) or p.filter == str(x.pid)}
        found = [x for x in found if x.pid in matched or x.ppid in matched]
    ours = _our_tree()
    listed = [x for x in found if x.pid not in ours and not _is_flight_mcp(x.cmdline)]
    pids = {x.pid for x in listed}
    masters = {x.ppid for x in listed if x.ppid in pids}
    stalls: dict[int, dict | None] = {}
    askers = [threading.Thread(target=lambda pid=x.pid: stalls.__setitem__(pid, _stalled(call, pid)), daemon=True)
              for x in listed if _agent_listening(x)]
    for t in askers:  # while _usage samples the CPU
        t.start()
    usage = _usage([x.pid for x in listed])
    for t in askers:
        t.join(gil.STALL_BUDGET_S + gil.SAMPLE_TIMEOUT_S + 0.5)
    out = []
    for x in listed:
        role = "master" if x.pid in masters else "worker" if x.ppid in pids else None
        command = " ".join(" ".join(x.cmdline).split())   # one line, even for `python -c "..."` with newlines
        out.append(ProcessInfo(pid=x.pid, ppid=x.ppid, user=x.user, python="%d.%d" % x.version,
                               command=command[:300], agent_attached=_agent_listening(x),
                               parent_is_python=x.ppid in pids, role=role, **usage.get(x.pid, {}),
                               **_stall_facts(stalls.get(x.pid))))
    for master in (x for x in out if x.role == "master"):
        # what it runs: its own command line, or its workers' (`-c from multiprocessing.spawn ...`)
        family = [master] + [x for x in out if x.ppid == master.pid]
        master.server = next((s for x in family for s in SERVERS if s in x.command), None)
        for x in family[1:]:
            x.server = master.server
    return ListResult(processes=out, left_out=len(found) - len(listed))


def _stalled(call: Call, pid: int) -> dict | None:
    try:
        return gil.stalled_now(pid, call.sessions.thread_names(pid) if call is not None else None)
    except Exception:  # a process that went away meanwhile: nothing to say about it
        return None


def _stall_facts(stall: dict | None) -> dict:
    if stall is None:
        return {}
    return {"gil_stalled": stall["stalled"], "gil_holder": stall.get("holder")}


def _our_tree() -> set[int]:
    """This process and its ancestors (the server or CLI and its clients, the CLI's resident), and those
    of its descendants that are forks of it (an injector child); not a target it started (the demo's)."""
    me = psutil.Process()
    tree = {me.pid}
    try:
        tree.update(p.pid for p in me.parents())
        mine = me.cmdline()
        for child in me.children(recursive=True):
            try:
                if child.cmdline() == mine:
                    tree.add(child.pid)
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return tree


def _is_flight_mcp(cmdline: list[str]) -> bool:
    """Another flight-mcp server or CLI (`flight-mcp ...`, `python -m flight_mcp[.cli]`)."""
    head = cmdline[:3]
    return any(os.path.basename(w) == "flight-mcp" for w in head) or any(
        a == "-m" and b.split(".")[0] == "flight_mcp" and b != "flight_mcp.demo_target"
        for a, b in zip(head, head[1:]))


def _usage(pids: list[int]) -> dict[int, dict]:
    """Memory, threads, state and age now, CPU over one short sample for all processes at once."""
    procs_, first = {}, {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            first[pid] = sum(proc.cpu_times()[:2])
            procs_[pid] = proc
        except psutil.Error:
            pass
    if procs_:
        time.sleep(CPU_SAMPLE_S)
    now = time.time()
    out = {}
    for pid, proc in procs_.items():
        try:
            with proc.oneshot():
                out[pid] = dict(cpu_percent=round(100 * (sum(proc.cpu_times()[:2]) - first[pid]) / CPU_SAMPLE_S, 1),
                                rss_mb=round(proc.memory_info().rss / 2**20, 1), threads=proc.num_threads(),
                                state=proc.status(), uptime_s=round(now - proc.create_time(), 1))
        except psutil.Error:
            pass
    return out


def _agent_listening(x: procs.PythonProcess) -> bool:
    """The agent's socket exists and this very process has our payload mapped: a socket left by an
    earlier process with the same pid (killed while attached) does not count."""
    rdir = RuntimeDir(x.pid, x.uid, 0)
    return rdir.has_socket() and rdir.payload_mapped()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _num(value: float | int | None, fmt: str) -> str:
    return "?" if value is None else format(value, fmt)


def render(r: ListResult, color: bool) -> str:
    left = f" ({r.left_out} of flight-mcp's own not listed)" if r.left_out else ""
    if not r.processes:
        return "no Python processes found (that this user may see)" + left
    lines = [f"{'PID':>7} {'PPID':>7} {'USER':<9} {'PY':<5} {'AGENT':<5} {'RSS_MB':>7} {'CPU%':>6} {'THR':>4} "
             f"{'STATE':<9} {'UP':>4}  COMMAND"]
    for x in r.processes:
        role = f"[{x.role}{' of ' + x.server if x.server and x.role == 'worker' else ''}] " if x.role else ""
        lines.append(f"{x.pid:>7} {x.ppid:>7} {x.user[:9]:<9} {x.python:<5} {'yes' if x.agent_attached else '-':<5} "
                     f"{_num(x.rss_mb, '.1f'):>7} {_num(x.cpu_percent, '.1f'):>6} {_num(x.threads, 'd'):>4} "
                     f"{(x.state or '?')[:9]:<9} {_age(x.uptime_s):>4}  {'└ ' if x.role == 'worker' else ''}{role}"
                     f"{x.command}")
        if x.gil_stalled:
            lines.append(f"{'':>16}! GIL stalled now: " + (
                f"thread {x.gil_holder.native_id} ({x.gil_holder.name}) holds it" + gil_wait.where(x.gil_holder)
                if x.gil_holder else "the thread holding it was not read"))
    return "\n".join(lines) + (f"\n{left.strip(' ()')}" if left else "")


TOOL = Tool(
    name="list_processes", params=ListParams, result=ListResult, run=run, render=render,
    title="List Python processes", aliases=("ps",),
    description=(
        "List running Python processes: pid, parent, user, Python version, whether the flight-mcp agent is "
        "attached, resident memory, CPU use now, threads, state, age and command line, and, where the agent is "
        "attached, whether a thread holds the GIL right now and keeps every other one waiting (which one). Start here to find the "
        "pid for every other tool; for servers with workers (gunicorn, uvicorn, celery, multiprocessing) pick a "
        "worker (role=worker, marked └), not the master. flight-mcp's own processes are left out. Read-only."),
)
