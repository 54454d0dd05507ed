"""The one error type callers see: a code from the catalogue (agent/codes.py), what happened, and
what to do. Never a traceback.

The agent and the host both write a tool argument as `{arg:NAME}` in a message; `speak` writes it
in the caller's language: the argument name over MCP, the flag on the command line.
"""
from __future__ import annotations

import re
from typing import Callable

from .agent.codes import CODES

_ARG = re.compile(r"\{arg:([A-Za-z_][A-Za-z0-9_]*)\}")


class FlightError(Exception):
    def __init__(self, code: str, message: str, *, hint: str | None = None, arg: str | None = None, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint if hint is not None else CODES.get(code, "")
        self.arg = arg  # the argument at fault, when one is
        self.extra = extra

    @property
    def kind(self) -> str:  # the name the agent protocol and older callers use
        return self.code

    def __str__(self) -> str:
        return self.message

    def spoken(self, name_of: Callable[[str], str]) -> "FlightError":
        """This error with every `{arg:NAME}` written as name_of(NAME)."""
        return FlightError(self.code, speak(self.message, name_of), hint=speak(self.hint, name_of),
                           arg=self.arg, **self.extra)

    def as_fact(self) -> dict:
        """The error as structured content: {code, message, hint, argument}."""
        return {"code": self.code, "message": self.message, "hint": self.hint, "argument": self.arg}


def speak(text: str, name_of: Callable[[str], str]) -> str:
    return _ARG.sub(lambda m: name_of(m.group(1)), text)
