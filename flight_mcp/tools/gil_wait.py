"""The gil_wait fact every tool's Result carries (see session/gil.py for how it is measured), and its
one note line. Tool (base.py) gives each Result model the field and fills it after run()."""
from __future__ import annotations

from pydantic import BaseModel, Field, create_model

from ..models import GilHolder, GilWait


def with_gil_wait(result: type[BaseModel]) -> type[BaseModel]:
    """result's model with a gil_wait field (itself when it has one)."""
    if "gil_wait" in result.model_fields:
        return result
    return create_model(result.__name__, __base__=result, __module__=result.__module__, __doc__=result.__doc__,
                        gil_wait=(GilWait | None, Field(None, description=(
                            "Set when the answer waited for the GIL (a thread held it in a long C call): how long, "
                            "and which thread held it, read from outside while the request waited."))))


def attach(model: type[BaseModel], result: BaseModel, wait: dict | None) -> BaseModel:
    """result (run()'s, just made) as an instance of model (with_gil_wait of its class), with the wait
    when there is one. Its class is switched in place: the subclass adds one field and nothing else, and
    a copy through model_construct would clash with fields named like its parameters (vmtool's cls)."""
    if type(result) is not model and type(result) is model.__bases__[0]:
        result.__class__ = model
    if "gil_wait" in type(result).model_fields:
        result.gil_wait = GilWait(**wait) if wait is not None else None
    return result


def line(w: GilWait) -> str:
    """One note line: how long the answer waited, and who held the GIL then."""
    more = f" ({w.requests} requests of this call waited; the longest is shown)" if w.requests > 1 else ""
    if w.still_waiting:
        text = (f"note: GIL held: `{w.request}` had waited {w.waited_ms / 1000:.2f}s for the GIL in the agent and "
                f"still waited when this answer was given{more}")
    else:
        text = (f"note: this answer waited {w.waited_ms / 1000:.2f}s for the GIL (`{w.request}` could not run in "
                f"the agent){more}")
    h = w.holder
    if h is None:
        return text + "; the thread holding it was not read."
    return (text + f": thread {h.native_id} ({h.name}) {'holds' if w.still_waiting else 'held'} it, read from "
            f"outside {(w.seen_after_ms or 0) / 1000:.2f}s into the wait{where(h)}.")


def where(h: GilHolder) -> str:
    """", in fn (file:line)": the holder's innermost Python frame, the one inside the long C call."""
    if not h.frames:
        return ""
    f = h.frames[-1]
    return f", in {f.qualname or f.name} ({f.file}:{f.line if f.line is not None else '?'})"
