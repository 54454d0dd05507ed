"""module: which module name the target imported a file under."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..models import Fact
from .base import Call, Cli, TimedParams, Tool


class ModuleParams(TimedParams):
    filepath: Annotated[str, Cli("--filepath", positional=True)] = Field(
        description="Absolute path of a .py file of the target's code (as the target sees it).")


class ModuleResult(Fact):
    filepath: str
    realpath: str
    modules: list[str] = Field(description="Module names the target imported this file under; use the "
                               "first one as `module` in trace, watch, getglobal and reload.")


def run(p: ModuleParams, call: Call) -> ModuleResult:
    return ModuleResult(**call.request(p, "module", p.agent_args()))


def render(r: ModuleResult, color: bool) -> str:
    lines = [r.modules[0]]
    if len(r.modules) > 1:
        lines.append("also imported as: " + ", ".join(r.modules[1:]))
    return "\n".join(lines)


TOOL = Tool(
    name="module", params=ModuleParams, result=ModuleResult, run=run, render=render, title="File to module name",
    description=(
        "Translate a source file path into the module name the live process imported it under (symlinks "
        "resolved); the script that was run is '__main__'. Use it before trace/watch/getglobal/reload when "
        "you know the file but not the module name. Read-only."),
)
