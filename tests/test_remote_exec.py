"""The Python >= 3.14 path (PEP 768). No 3.14 interpreter is on these machines, so this checks what can
be checked without one: the command it runs and the path translation into the target's view."""
from flight_mcp.attach import remote_exec
from flight_mcp.attach.bootstrap import RuntimeDir


def test_remote_exec_runs_the_targets_own_interpreter_with_the_targets_path():
    rdir = RuntimeDir(4242, 1000, 1000)
    host_script = rdir.host + "/inject-4242-abc.py"
    target_path = rdir.to_target(host_script)
    assert target_path == "/tmp/flight-mcp-1000/inject-4242-abc.py"
    cmd = remote_exec.command(4242, target_path)
    assert cmd[0] == "/proc/4242/exe"  # same interpreter build as the target, so versions match
    assert cmd[-2:] == ["4242", target_path]
    assert "sys.remote_exec" in " ".join(cmd)
