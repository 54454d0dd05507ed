"""attach / detach: connect the agent explicitly, and remove it with everything it installed."""
from __future__ import annotations

from pydantic import Field

from ..models import Compact, Fact
from .base import Call, Params, TimedParams, Tool


class Injection(Compact):
    """How the agent got in (fields left out when they do not apply)."""
    method: str = Field(description="pyinjector, sys.remote_exec (3.14+), earlier injection (an agent injected "
                                    "before started), or already attached.")
    thread: int | None = Field(None, description="The borrowed thread (native id).")
    syscall: int | None = Field(None, description="The system call that thread was blocked in.")
    tries: int | None = Field(None, description="Threads tried.")
    inject_ms: float | None = Field(None, description="Milliseconds for the survey and the injector.")
    ms: float | None = Field(None, description="Milliseconds until the agent listened.")
    replaced: str | None = Field(None, description="The version of another flight-mcp's agent that was detached.")
    session: str | None = Field(None, description="kept: this server's connection was reused.")


class AttachResult(Fact):
    pid: int
    python_version: str
    executable: str
    thread_count: int = Field(description="The target's threads (the agent's own left out).")
    agent_version: str
    agent_build: str | None = Field(description="Content hash of the agent's code.")
    connections: int = Field(description="Clients the agent serves (this one included).")
    threading_imported: bool
    asyncio_imported: bool
    argv: list[str] = Field(description="The target's sys.argv (at most 20).")
    injection: Injection


def run_attach(p: TimedParams, call: Call) -> AttachResult:
    kept = p.pid in call.sessions.attached()
    info = dict(call.sessions.get(p.pid, p.timeout_s).info)  # this call's deadline only, not the server's default
    if kept:  # this server's session is reused: say so, not how the agent got in at first
        info["injection"] = {"method": "already attached", "session": "kept"}
    return AttachResult(**info)


def render_attach(r: AttachResult, color: bool) -> str:
    inj = r.injection
    how = inj.method
    if how != "already attached":
        how += f" via thread {inj.thread} (blocked in syscall {inj.syscall}), {inj.ms} ms"
    return (f"attached to pid {r.pid}: Python {r.python_version} ({r.executable}), {r.thread_count} threads\n"
            f"agent {r.agent_version}: {how}\ncommand: {' '.join(r.argv)[:200]}")


class DetachResult(Fact):
    pid: int
    detached: bool
    message: str


def run_detach(p: Params, call: Call) -> DetachResult:
    done = call.sessions.detach(p.pid)
    msg = ("agent detached: all instrumentation removed and its socket closed" if done
           else "no agent was attached to this process; nothing to do")
    return DetachResult(pid=p.pid, detached=done, message=msg)


def render_detach(r: DetachResult, color: bool) -> str:
    return f"pid {r.pid}: {r.message}"


ATTACH = Tool(
    name="attach", params=TimedParams, result=AttachResult, run=run_attach, render=render_attach,
    title="Attach to a process",
    description=(
        "Attach flight-mcp's agent to a running Python process (3.8+) without restarting it, and report its "
        "Python version, executable and thread count. Optional: every other tool attaches on first use; call "
        "it to check access up front. It only borrows a thread that is blocked in a system call, so a process "
        "that computes without pause may need a retry. Needs ptrace rights (root or same user; "
        "CAP_SYS_PTRACE in containers). Changes nothing in the target's behaviour."),
)
DETACH = Tool(
    name="detach", params=Params, result=DetachResult, run=run_detach, render=render_detach,
    title="Detach from a process",
    description=("Remove every instrumentation flight-mcp installed in the process and close the agent's "
                 "socket. Use when you are done with a process."),
)
TOOLS = (ATTACH, DETACH)
