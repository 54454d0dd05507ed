"""Expressions that cannot work end the command with an error: a filter naming an undefined variable is
refused before attaching; a filter that raises on every call ends the capture (exit 1), instead of
waiting for the deadline and exiting 0 with a warning."""
import json

import pytest

from .conftest import flight_cli, version_params

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("version", version_params())
def test_unknown_name_refused_before_attaching_and_hopeless_filter_ends_the_capture(spawn, version):
    t = spawn(version, "trace_extras")
    r = flight_cli(str(t.pid), "--cmd", "watch __main__ Pricing rate -f 'undefined_var > 1'")
    assert r.returncode == 2 and "'undefined_var' is not defined" in r.stderr, r.stderr
    assert "-f/--filter_expr/--filter" in r.stderr
    # ...and nothing was injected: the process is not attached
    r = flight_cli("ps", "--json")
    me = [p for p in json.loads(r.stdout)["processes"] if p["pid"] == t.pid]
    assert me and not me[0]["agent_attached"], me

    for cmd in ("watch __main__ Pricing rate -f 'args[3] > 1'", "trace __main__ Pricing rate -f 'args[0].nope'"):
        r = flight_cli(str(t.pid), "--cmd", cmd + " --timeout 60")
        assert r.returncode == 1 and "[expression_failed]" in r.stderr, (cmd, r.stdout, r.stderr)
        assert "on each of the first" in r.stderr and "instrumentation removed" in r.stderr
    # the function runs as before: a filter that works captures
    r = flight_cli(str(t.pid), "--cmd", "watch __main__ Pricing rate -f 'args[0] >= 0' -n 1")
    assert r.returncode == 0 and "1 of 1 captured" in r.stdout, r.stderr
    assert t.alive()
