"""The unit tier starts no process: tests/unit/conftest.py makes every way of starting one fail."""
import multiprocessing
import os
import subprocess
import sys

import pytest

from .conftest import ProcessStarted


@pytest.mark.parametrize("start", [
    lambda: subprocess.run([sys.executable, "-c", "pass"]),
    lambda: subprocess.Popen(["true"]),
    lambda: os.system("true"),
    lambda: os.popen("true").read(),
    lambda: os.fork(),
    lambda: os.posix_spawn("/bin/true", ["true"], os.environ),
    lambda: os.execv("/bin/true", ["true"]),
    lambda: multiprocessing.get_context("fork").Process(target=print).start(),
    lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
], ids=["subprocess.run", "Popen", "os.system", "os.popen", "os.fork", "posix_spawn", "execv",
        "multiprocessing-fork", "multiprocessing-spawn"])
def test_starting_a_process_fails_the_test(start):
    with pytest.raises(ProcessStarted, match="tests/unit must not start a process"):
        start()
