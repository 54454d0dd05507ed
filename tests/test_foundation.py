"""attach -> stack / module / getglobal -> detach on every target version, through the real CLI."""
import pytest

from .conftest import PYTHONS, flight_cli, version_params

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("version", version_params())
def test_cli_stack_getglobal_module_detach(spawn, version):
    t = spawn(version, "demo")
    r = flight_cli(str(t.pid), "--cmd", "stack")
    assert r.returncode == 0, r.stderr
    assert "(order-worker)" in r.stdout and "Traceback for thread" in r.stdout
    assert "demo_target.py" in r.stdout
    r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ CONFIG -x 2")
    assert r.returncode == 0, r.stderr
    assert "EXPR:       target" in r.stdout and "TYPE:       <class 'dict'>" in r.stdout and '"port": 5432' in r.stdout
    r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ OrderService region")
    assert r.returncode == 0 and '"eu-west"' in r.stdout, r.stdout + r.stderr
    r = flight_cli(str(t.pid), "--cmd", f"module {t.script}")
    assert r.returncode == 0 and r.stdout.strip() == "__main__", r.stdout + r.stderr
    r = flight_cli(str(t.pid), "--cmd", "detach")
    assert r.returncode == 0 and "detached" in r.stdout
    assert t.alive()


def test_cli_command_path_does_not_import_the_mcp_stack(spawn):
    """A one-shot command must start fast: the MCP SDK (and its web stack) stays out of it."""
    t = spawn(next(v for v, exe in PYTHONS.items() if exe), "demo")
    probe = ("import sys; from flight_mcp.cli import main; rc = main(sys.argv[1:]); "
             "print('MODULES', sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'flight_mcp'))); "
             "sys.exit(rc)")
    r = flight_cli("-c", probe, str(t.pid), "--cmd", "stack", python_args=True)
    assert r.returncode == 0, r.stderr
    modules = r.stdout.split("MODULES", 1)[1]
    assert "flight_mcp.tools.stack" in modules  # the probe sees the command's imports
    assert "'mcp" not in modules
