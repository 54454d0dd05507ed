"""Threads for blocking work that must not hold up its caller (a request the caller stops waiting for
when the GIL is held), reused: Thread.start() waits until the new thread runs, a scheduler round trip of
~0.3-1 ms on a busy machine, paid by every warm stack call when each started a thread of its own."""
from __future__ import annotations

import threading
from typing import Callable

KEEP_IDLE = 4   # idle threads kept for the next job; a busier moment starts more, which then end

_idle: list["_Worker"] = []
_lock = threading.Lock()


class Job:
    """A function running on a worker thread: is_alive() until it returned or raised."""

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn
        self.done = threading.Event()

    def is_alive(self) -> bool:
        return not self.done.is_set()

    def join(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)


class _Worker:
    def __init__(self):
        self.job: Job | None = None
        self.wake = threading.Event()
        threading.Thread(target=self._loop, name="flight-mcp-worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            job, self.job = self.job, None
            try:
                job.fn()
            except BaseException:
                pass   # the job reports its own outcome; a worker never dies of one
            finally:
                job.done.set()
            with _lock:
                if len(_idle) >= KEEP_IDLE:
                    return
                _idle.append(self)


def run(fn: Callable[[], None]) -> Job:
    """fn() on an idle worker thread (a new one when none is idle); never waits for it."""
    job = Job(fn)
    with _lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        worker = _Worker()
    worker.job = job
    worker.wake.set()
    return job
