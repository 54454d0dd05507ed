"""A target in a pid namespace of its own (a container) numbers itself and its threads otherwise than
we do: the agent's answers carry its own numbers (os.getpid(), threading.get_native_id()). Translated
on arrival, every pid and thread id a tool shows or compares is ours: the pid the user gave, the ids
/proc/PID/task and an outside reading of the stacks use.

Only the fields that hold the process's or a thread's id are translated: "pid" and "native_id"
anywhere in a message (values from the target arrive as views, whose keys are never these), and the
keys of an ack's "threads" (native_id -> name)."""
from __future__ import annotations

import time
from typing import Any, Callable

from .. import procfs

# A thread id we do not know yet (a thread started since) re-reads the threads at most this often.
_REREAD_S = 0.05


class Translator:
    def __init__(self, pid: int, inner: int):
        self.pid, self.inner = pid, inner
        self.tids: dict[int, int] = {}
        self._read_at = float("-inf")

    def tid(self, inner: int) -> int | None:
        """Our id of the thread the target calls inner; None for a thread gone before we saw it."""
        if inner == self.inner:
            return self.pid
        if inner not in self.tids and time.monotonic() - self._read_at >= _REREAD_S:
            self.tids = procfs.ns_tids(self.pid)
            self._read_at = time.monotonic()
        return self.tids.get(inner)

    def __call__(self, msg: Any) -> Any:
        if isinstance(msg, dict):
            out = {}
            for key, value in msg.items():
                if key in ("pid", "native_id") and type(value) is int:
                    value = self.tid(value)
                elif key == "threads" and isinstance(value, dict) and all(k.isdigit() for k in value):
                    # an ack's {native_id: name}
                    value = {str(t): name for t, name in ((self.tid(int(k)), name) for k, name in value.items())
                             if t is not None}
                else:
                    value = self(value)
                out[key] = value
            return out
        if isinstance(msg, list):
            return [self(x) for x in msg]
        return msg


def translator(pid: int) -> Callable[[Any], Any] | None:
    """What turns the agent's ids into ours, None when pid shares our pid namespace."""
    inner = procfs.ns_pid(pid)
    return None if inner == pid else Translator(pid, inner)
