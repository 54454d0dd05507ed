"""Every fact flight-mcp reads from /proc, in one place: the parsers work on text (tested on samples),
the readers open the files and say "unknown" (None, empty) when a process is gone or hidden.

Standard library `os` only, and no dataclasses: it is on every attach's path, and cheap to import.
"""
from __future__ import annotations

import os

PROC = "/proc"


def path(pid: int, *parts: str) -> str:
    return "/".join((PROC, str(pid)) + parts)


def _read(p: str) -> str | None:
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None


# -- parsers (text in, facts out) -------------------------------------------------------------------
class Stat:
    """The facts of /proc/PID/stat we use: state letter and start time (clock ticks since boot)."""
    __slots__ = ("state", "ppid", "start_time")

    def __init__(self, state: str, ppid: int, start_time: str):
        self.state, self.ppid, self.start_time = state, ppid, start_time


def parse_stat(text: str) -> Stat | None:
    """The command name (field 2) may hold spaces and parentheses: fields count from the last ')'."""
    try:
        rest = text.rsplit(")", 1)[1].split()
        return Stat(rest[0], int(rest[1]), rest[19])
    except (IndexError, ValueError):
        return None


class Mapping:
    """One line of /proc/PID/maps: [start, end) and the mapped file ('' for anonymous memory)."""
    __slots__ = ("start", "end", "path")

    def __init__(self, start: int, end: int, path: str):
        self.start, self.end, self.path = start, end, path

    def __repr__(self) -> str:
        return f"Mapping({self.start:#x}, {self.end:#x}, {self.path!r})"


def parse_maps(text: str) -> list[Mapping]:
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = parts[0].split("-")
            out.append(Mapping(int(lo, 16), int(hi, 16), parts[5].strip() if len(parts) == 6 else ""))
        except ValueError:
            continue
    return out


def parse_status(text: str) -> dict[str, str]:
    """`Key:\tvalue` lines of /proc/PID/status."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def parse_syscall(text: str) -> tuple[int | None, list[str]]:
    """/proc/PID/task/TID/syscall: (number, arguments in hex); number None when running, -1 when
    stopped outside a system call."""
    fields = text.split()
    if not fields or fields[0] == "running":
        return None, []
    return int(fields[0]), fields[1:]


# -- readers ------------------------------------------------------------------------------------------
def exists(pid: int) -> bool:
    return os.path.exists(path(pid))


def stat(pid: int) -> Stat | None:
    text = _read(path(pid, "stat"))
    return None if text is None else parse_stat(text)


def state(pid: int) -> str | None:
    """The state letter (R, S, D, T stopped, t traced, Z zombie, ...), None when pid is gone."""
    st = stat(pid)
    return None if st is None else st.state


def alive(pid: int) -> bool:
    """False once pid has exited, zombie included (its parent may not have reaped it yet)."""
    return state(pid) not in (None, "Z", "X", "x")


def identity(pid: int) -> tuple[int, str]:
    """(pid, start time): tells a process from a later one that got the same pid."""
    st = stat(pid)
    return pid, "" if st is None else st.start_time


def maps(pid: int) -> list[Mapping] | None:
    """The memory mappings of pid, None when they cannot be read (gone, not allowed)."""
    text = _read(path(pid, "maps"))
    return None if text is None else parse_maps(text)


def mapped(pid: int, fragment: str) -> bool:
    """Whether a file whose path contains fragment is mapped in pid (False when unreadable)."""
    return any(fragment in m.path for m in maps(pid) or ())


def status(pid: int) -> dict[str, str]:
    text = _read(path(pid, "status"))
    return {} if text is None else parse_status(text)


def tracer(pid: int) -> int:
    """The pid tracing pid (a debugger), 0 for none or unknown."""
    try:
        return int(status(pid).get("TracerPid", "0"))
    except ValueError:
        return 0


def exe(pid: int) -> str:
    """The executable's path; raises OSError (FileNotFoundError: gone, PermissionError: not ours)."""
    return os.readlink(path(pid, "exe"))


def owner(pid: int) -> tuple[int, int]:
    """(uid, gid) owning pid's /proc entry; raises FileNotFoundError when pid is gone."""
    st = os.stat(path(pid))
    return st.st_uid, st.st_gid


def root(pid: int, p: str = "") -> str:
    """A path of pid's file system (its mount namespace) as we reach it."""
    return path(pid, "root") + p


def threads(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(path(pid, "task")))
    except (OSError, ValueError):
        return []


def thread_count(pid: int) -> int:
    return len(threads(pid)) or 1


def syscall(pid: int, tid: int) -> tuple[int | None, list[str]]:
    """What thread tid is blocked in (see parse_syscall); raises OSError when unreadable."""
    with open(path(pid, "task", str(tid), "syscall")) as f:
        return parse_syscall(f.read())


# -- namespaces (a target in a container) --------------------------------------------------------------
def parse_nspid(value: str) -> list[int]:
    """The `NSpid:` field of a status file: the id in each pid namespace, ours (that of our /proc)
    first, the process's innermost last. Empty when unknown (kernels before 4.1, garbage)."""
    try:
        return [int(x) for x in value.split()]
    except ValueError:
        return []


def parse_id_map(text: str) -> list[tuple[int, int, int]]:
    """/proc/PID/uid_map (or gid_map): (first id inside, first id outside, count) per line; outside
    ids are those of the user namespace of whoever reads the file."""
    out = []
    for line in text.splitlines():
        try:
            inside, outside, count = (int(x) for x in line.split())
        except ValueError:
            continue
        out.append((inside, outside, count))
    return out


def map_inside(ranges: list[tuple[int, int, int]], outside_id: int) -> int | None:
    """outside_id (our view) as the namespace of ranges sees it; None when it is not mapped there."""
    for inside, outside, count in ranges:
        if outside <= outside_id < outside + count:
            return inside + outside_id - outside
    return None


def ns_pid(pid: int) -> int:
    """pid as the process itself sees it (in its innermost pid namespace); pid when unknown."""
    ids = parse_nspid(status(pid).get("NSpid", ""))
    return ids[-1] if ids else pid


def ns_tids(pid: int) -> dict[int, int]:
    """The threads of pid: {id in the process's own pid namespace: our id}."""
    out = {}
    for tid in threads(pid):
        ids = parse_nspid(parse_status(_read(path(pid, "task", str(tid), "status")) or "").get("NSpid", ""))
        if ids:
            out[ids[-1]] = tid
    return out


def id_map(pid: int, kind: str = "uid") -> list[tuple[int, int, int]] | None:
    """pid's user namespace's uid_map/gid_map, None when unreadable."""
    text = _read(path(pid, f"{kind}_map"))
    return None if text is None else parse_id_map(text)
