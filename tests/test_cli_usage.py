"""The CLI as a shell uses it, in processes of their own: a reader that leaves early (`flight-mcp ps | head`,
`... | true`) ends the command quietly, with no BrokenPipeError traceback; --version and per-command help
from a new interpreter; a mistake in the program's own arguments is one line and exit 2."""
import os
import subprocess
import sys

import pytest

from .conftest import flight_cli

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("args", [["ps"], ["help"], ["help", "watch"], [str(os.getpid()), "--cmd", "trace -h"]])
def test_reader_gone_no_traceback(args):
    proc = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", *args, "--no-color"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()   # `| true`: the reader is gone before the first write
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception ignored" not in err, err.decode()


def test_head_reads_first_line_only():
    r = subprocess.run(f"{sys.executable} -m flight_mcp.cli help --no-color | head -1", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("NAME") and r.stdout.count("\n") == 1 and r.stderr == "", r.stderr


def test_version_and_command_help_from_a_new_interpreter():
    r = flight_cli("--version", subprocess=True)
    assert r.returncode == 0 and r.stdout.startswith("flight-mcp ")
    r = flight_cli(str(os.getpid()), "--cmd", "watch --help", "--no-color", subprocess=True)
    assert r.returncode == 0 and r.stdout.startswith("USAGE\n  watch module [cls] method") and "--timeout" in r.stdout


@pytest.mark.parametrize("argv, said", [
    (["abc", "--cmd", "stack"], "error: 'abc' is not a pid"),
    (["--stdio", "--cmd", "stack"], "error: --stdio serves MCP on stdin/stdout and runs nothing else"),
])
def test_program_argument_mistakes_are_one_line(argv, said):
    r = flight_cli(*argv)
    assert r.returncode == 2 and r.stderr.startswith(said) and r.stderr.count("\n") == 1, r.stderr
