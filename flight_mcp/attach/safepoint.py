"""Which threads of a target may be borrowed for an injection.

Measured (DESIGN.md, "Attach"): hijacking a thread wherever it stands crashes or corrupts
CPU-busy targets. A thread blocked in a system call is safe by the C ABI (a thread inside a
libc syscall wrapper treats vector registers as clobbered and holds no libc lock), except
while it is inside memory management, or waiting on a futex that belongs to libc or the
dynamic loader (malloc arena, dlopen lock): dlopen on such a thread can deadlock.
"""
from __future__ import annotations

import os

from .. import procfs

_UNSAFE = {
    "x86_64": {"brk": 12, "mmap": 9, "munmap": 11, "mremap": 25, "madvise": 28, "mprotect": 10},
    "aarch64": {"brk": 214, "mmap": 222, "munmap": 215, "mremap": 216, "madvise": 233, "mprotect": 226},
}
_FUTEX = {"x86_64": 202, "aarch64": 98}
_ARCH = os.uname().machine
UNSAFE_SYSCALLS = set(_UNSAFE.get(_ARCH, {}).values())
FUTEX = _FUTEX.get(_ARCH, -1)
_LOADER_LIBS = ("/libc.so", "/libc-", "/ld-linux", "/ld-musl", "/libpthread", "/libdl")


class ThreadState:
    __slots__ = ("tid", "syscall", "safe", "why")

    def __init__(self, tid: int, syscall: "int | None", safe: bool, why: str):
        self.tid = tid
        self.syscall = syscall  # None: running or not in a system call
        self.safe = safe
        self.why = why

    def __repr__(self) -> str:
        return f"ThreadState({self.tid}, {self.syscall}, {self.safe}, {self.why!r})"


def _libc_ranges(pid: int) -> list[tuple[int, int]]:
    return [(m.start, m.end) for m in procfs.maps(pid) or () if any(lib in m.path for lib in _LOADER_LIBS)]


def thread_state(pid: int, tid: int, libc: list[tuple[int, int]] | None = None) -> ThreadState:
    try:
        nr, fields = procfs.syscall(pid, tid)
    except OSError as e:
        return ThreadState(tid, None, False, f"cannot read its state ({e.strerror})")
    if nr is None:
        return ThreadState(tid, None, False, "running (not in a system call)")
    if nr < 0:
        return ThreadState(tid, None, False, "stopped outside a system call")
    if nr in UNSAFE_SYSCALLS:
        return ThreadState(tid, nr, False, f"inside memory management (syscall {nr})")
    if nr == FUTEX:
        addr = int(fields[0], 16)
        if any(lo <= addr < hi for lo, hi in (libc if libc is not None else _libc_ranges(pid))):
            return ThreadState(tid, nr, False, "waiting on a libc/loader lock")
    return ThreadState(tid, nr, True, f"blocked in syscall {nr}")


def survey(pid: int) -> list[ThreadState]:
    """Every thread's state, safe ones first (the main thread first among those: it is the
    thread most likely to stay blocked, e.g. in a sleep or a poll of the event loop)."""
    libc = _libc_ranges(pid)
    tids = procfs.threads(pid)
    states = [thread_state(pid, tid, libc) for tid in tids]
    states.sort(key=lambda s: (not s.safe, s.tid != pid, s.tid))
    return states
