"""The threading names an agent last gave for a target's threads (native_id -> name), kept in our
private state directory so that a reading from outside, made while the GIL is held and the agent
cannot answer, names threads as Python does even in a fresh command line (whose own connection has
not heard a name yet). Keyed by pid and start time: a later process with the same pid gets none.
Names are display text only (escaped when shown); a file that is not ours and plain is ignored."""
from __future__ import annotations

import json
import os
import stat
import tempfile

from .. import procfs, statedir

MAX_BYTES = 1 << 20
MAX_FILES = 200   # targets remembered; the files of processes that are gone are removed first

# file path -> the names this process last wrote there: a warm stack call learns the same names again
# each time, and writing them again cost ~1-2 ms of a ~5 ms call
_written: dict[str, dict[int, str]] = {}


def _dir() -> str:
    return os.path.join(statedir.root(), "threads")


def _name(pid: int) -> str | None:
    st = procfs.stat(pid)
    return f"{pid}-{st.start_time}.json" if st is not None else None


def load(pid: int) -> dict[int, str]:
    name = _name(pid)
    if name is None:
        return {}
    try:
        fd = os.open(os.path.join(_dir(), name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > MAX_BYTES:
            return {}
        data = json.loads(os.read(fd, MAX_BYTES))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    if type(data) is not dict:
        return {}
    return {int(k): v for k, v in data.items() if type(k) is str and k.isdigit() and type(v) is str}


def save(pid: int, names: dict[int, str]) -> None:
    """Best effort: a state directory we cannot use only means no names next time."""
    name = _name(pid)
    if name is None or not names or _written.get(os.path.join(_dir(), name)) == names:
        return
    try:
        folder = statedir.private(_dir())
        _forget_gone(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".names-")   # 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({str(k): v for k, v in names.items()}, f)
            os.replace(tmp, os.path.join(folder, name))
            if len(_written) >= MAX_FILES:
                _written.clear()
            _written[os.path.join(_dir(), name)] = dict(names)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _forget_gone(folder: str) -> None:
    entries = os.listdir(folder)
    if len(entries) < MAX_FILES:
        return
    for entry in entries:
        pid = entry.split("-", 1)[0]
        if entry.endswith(".json") and pid.isdigit() and (_name(int(pid)) != entry):
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass
