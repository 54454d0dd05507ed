"""The facts every tool's Result is built from: one model each for a frame, an exception and a
value's view, whatever tool reports them. Every model forbids unknown fields, so a fact the agent
sends that no model holds is an error (bad_agent_reply), not a silent loss.

The agent sends exactly these field names (epoch seconds for times, codes for reasons); the host
validates them here and does all the rendering.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class Fact(BaseModel):
    # defer_build: a model's validator is built when it is first used, not when its module is imported:
    # a one-shot command imports many models and uses a few (its Params, its Result and their parts)
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Compact(Fact):
    """A fact sent in great numbers (the nodes of a value's view): its JSON leaves out the fields that
    hold their default, so a large value costs a reader (a model's context) only what it says."""

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        fields = type(self).model_fields
        return {k: v for k, v in out.items() if k not in fields or fields[k].is_required()
                or v != fields[k].get_default(call_default_factory=True)}


class Frame(Fact):
    """A place in the code: a stack frame, a trace node, a step of an await chain, a traceback line."""
    file: str = Field(description="Source file; '' where there is none (native frames without a file, gaps).")
    line: int | None = Field(None, description="None when no line is known (f_lineno is None at some "
                                               "instructions on Python 3.11+; native frames).")
    name: str = Field(description="Function name.")
    qualname: str = Field("", description="Qualified name (Class.method) when the interpreter knows it.")
    source: str = Field("", description="The source line, stripped, when the file could be read.")
    kind: Literal["python", "native", "builtin", "gap"] = Field(
        "python", description="python; native (a C frame read from outside); builtin (a C function called from "
                              "Python, in trace); gap (time suspended at await/yield, in trace).")
    library: str | None = Field(None, description="Native frames: the shared object the function is in.")


class ExceptionFact(Fact):
    type: str = Field(description="The exception's class name.")
    message: str = Field(description="str() of the exception, on one line, cut to 300 characters.")
    frames: list[Frame] = Field(default_factory=list, description="The traceback, outermost first.")
    frames_elided: int = Field(0, description="Traceback frames left out in the middle (60 are kept).")


class ViewChild(Compact):
    name: str | None = Field(None, description="Key, attribute or None for sequence items.")
    view: "ValueView"


class ValueView(Compact):
    """A value as seen without running the target's code (or, with raw, through its own time-boxed repr)."""
    type: str = Field(description="The value's type name (module.Class for classes of the target).")
    kind: str = Field(description="leaf, sequence, mapping, set or object.")
    repr: str | None = Field(None, description="One-line text of the value, capped.")
    len: int | None = Field(None, description="Length of a container.")
    children: list[ViewChild] | None = Field(None, description="Expanded contents (by expand levels).")
    elided: int = Field(0, description="Items or attributes left out.")
    elided_at: int | None = Field(None, description="Where in children the left-out items were.")
    cycle: bool = Field(False, description="The value contains itself here; shown above.")
    error: str | None = Field(None, description="Why the value could not be read or shown in full.")


class GilHolder(Fact):
    """A thread seen holding the GIL, read from outside the process (no code ran in it)."""
    native_id: int = Field(description="The OS thread id (threading.get_native_id()).")
    name: str = Field(description="Its threading name when an agent answer told it, else the OS's.")
    frames: list[Frame] = Field(default_factory=list, description="Its innermost Python frames (last: the "
                                                                  "one inside the long C call), at most 5.")


class GilWait(Fact):
    """An answer that waited for the GIL: every Result has one (None when no request waited long)."""
    waited_ms: float = Field(description="How long the agent's request waited for the GIL: before any Python code "
                                         "ran for it, plus after it answered until the answer left.")
    request: str = Field(description="The agent command that waited longest.")
    requests: int = Field(1, description="How many of this call's requests waited that long.")
    holder: GilHolder | None = Field(None, description="The thread holding the GIL, read from outside while the "
                                                       "request waited (None: not read, or nobody held it then).")
    seen_after_ms: float | None = Field(None, description="When that reading started, counted from the request.")
    still_waiting: bool = Field(False, description="The request was still waiting when this answer was given "
                                                   "(stack answered from outside instead): waited_ms is a lower bound.")
