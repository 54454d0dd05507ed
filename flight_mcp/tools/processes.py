"""list_processes: the Python processes one could attach to."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ..attach import procs
from ..attach.bootstrap import RuntimeDir
from ..models import Fact
from .base import Call, Cli, Tool


class ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter: Annotated[str | None, Cli(positional=True)] = Field(
        None, description="Only processes whose command line contains this text (or whose pid it is).")


class ProcessInfo(Fact):
    pid: int
    ppid: int
    user: str
    python: str
    command: str
    agent_attached: bool
    parent_is_python: bool = Field(description="True for a worker whose parent is also Python "
                                   "(gunicorn/uvicorn/multiprocessing): attach to the worker that does the work.")


class ListResult(Fact):
    processes: list[ProcessInfo]


def run(p: ListParams, call: Call) -> ListResult:
    found = procs.list_python(p.filter)
    pids = {x.pid for x in found}
    out = []
    for x in found:
        out.append(ProcessInfo(pid=x.pid, ppid=x.ppid, user=x.user, python="%d.%d" % x.version,
                               command=" ".join(x.cmdline)[:300], agent_attached=_agent_listening(x),
                               parent_is_python=x.ppid in pids))
    return ListResult(processes=out)


def _agent_listening(x: procs.PythonProcess) -> bool:
    """The agent's socket exists and this very process has our payload mapped: a socket left by an
    earlier process with the same pid (killed while attached) does not count."""
    rdir = RuntimeDir(x.pid, x.uid, 0)
    return rdir.has_socket() and rdir.payload_mapped()


def render(r: ListResult, color: bool) -> str:
    if not r.processes:
        return "no Python processes found (that this user may see)"
    lines = [f"{'PID':>7} {'PPID':>7} {'USER':<10} {'PY':<5} {'AGENT':<5} COMMAND"]
    for x in r.processes:
        lines.append(f"{x.pid:>7} {x.ppid:>7} {x.user[:10]:<10} {x.python:<5} {'yes' if x.agent_attached else '-':<5} "
                     f"{'  └ ' if x.parent_is_python else ''}{x.command}")
    return "\n".join(lines)


TOOL = Tool(
    name="list_processes", params=ListParams, result=ListResult, run=run, render=render,
    title="List Python processes", aliases=("ps",),
    description=(
        "List running Python processes (pid, parent, user, Python version, whether the flight-mcp agent is "
        "attached, command line). Start here to find the pid for every other tool; for servers with workers "
        "(gunicorn, uvicorn, celery, multiprocessing) pick the worker child, marked └, not the master. Read-only."),
)
