"""The unit tier starts no process: every way Python starts one fails the test that tries."""
import os
import subprocess

import pytest

try:
    import _posixsubprocess
except ImportError:  # not POSIX
    _posixsubprocess = None

# Everything subprocess, os.popen, multiprocessing and pty end in, plus the direct calls.
_OS_CALLS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve", "execvp", "execvpe",
             "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe")


class ProcessStarted(AssertionError):
    pass


def _refuse(name):
    def refuse(*args, **kwargs):
        raise ProcessStarted(f"tests/unit must not start a process ({name} called); "
                             "an end-to-end test belongs in tests/")
    return refuse


@pytest.fixture(autouse=True)
def no_process_started(monkeypatch):
    for name in _OS_CALLS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse(f"os.{name}"))
    if _posixsubprocess is not None:
        monkeypatch.setattr(_posixsubprocess, "fork_exec", _refuse("_posixsubprocess.fork_exec"))
    if getattr(subprocess, "_fork_exec", None) is not None:  # 3.11+: imported by name
        monkeypatch.setattr(subprocess, "_fork_exec", _refuse("subprocess._fork_exec"))
    yield
