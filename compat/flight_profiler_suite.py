"""Runs flight_profiler's own plugin integration tests against flight-mcp's CLI.

flight_profiler (the tool flight-mcp replaces) ships its tests in its wheel: each starts a script,
runs `client.py PID --cmd "..."` and looks for a line in what it prints. This runner, started with
the Python of a venv where `flight_profiler` is installed (never in flight-mcp's own environment),
points their harness at another command line instead of client.py and runs the tests unchanged:

    /path/to/fp-venv/bin/python compat/flight_profiler_suite.py --cli "/path/to/flight-mcp" \
        [--target-python /path/to/python3.8] [TEST_ID_PREFIX ...]

--target-python runs their scripts on another interpreter (their scripts are plain Python; the
flight_profiler package is put on its path for the two that import from it). Exit status 0 when
every selected test passed. Nothing of flight_profiler is copied here: only its harness's two
entry points are redirected.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import unittest

# Their plugin tests that drive a real process through the CLI (unit tests of their own internals,
# torch, and their interactive-shell tests are not about the command line's behaviour).
SUITES = ["stack.stack_plugin_test", "trace.trace_plugin_test", "watch.watch_plugin_test",
          "getglobal.getglobal_plugin_test", "module.module_plugin_test", "reload.reload_plugin_test",
          "vmtool.vmtool_plugin_test", "tt.tt_plugin_test", "mem.mem_plugin_test", "perf.perf_server_test",
          "gilstat.gilstat_plugin_test", "console.console_plugin_test", "help.help_plugin_test",
          "history.history_plugin_test"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True, help="the command line to test, e.g. 'flight-mcp'")
    ap.add_argument("--target-python", default=sys.executable)
    ap.add_argument("select", nargs="*", help="test id prefixes, e.g. 'tt' or 'stack.stack_plugin_test'")
    opts = ap.parse_args()

    import flight_profiler
    from flight_profiler.test.plugins import profile_integration as pi

    cli = shlex.split(opts.cli)
    # their scripts may import flight_profiler.test...: give the target interpreter that package only
    shim = tempfile.mkdtemp(prefix="fp-shim-")
    os.symlink(os.path.dirname(flight_profiler.__file__), os.path.join(shim, "flight_profiler"))
    os.environ["PYTHONPATH"] = shim
    pi.get_py_bin_path = lambda pid: opts.target_python

    def execute_profile_cmd(self, cmd: str):
        self.client_process = subprocess.Popen(cli + [str(self.server_process.pid), "--cmd", cmd],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, bufsize=1, text=True)

    pi.ProfileIntegration.execute_profile_cmd = execute_profile_cmd

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in SUITES:
        if opts.select and not any(name.startswith(s) for s in opts.select):
            continue
        suite.addTests(loader.loadTestsFromName("flight_profiler.test.plugins." + name))
    if suite.countTestCases() == 0:
        print("no test selected", file=sys.stderr)
        return 2
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
