"""`flight-mcp demo`, the newcomer's first command, end to end through the real CLI."""
import pytest

from .conftest import flight_cli

pytestmark = pytest.mark.timeout(120)


def test_demo_runs_every_tool_and_stops_its_target():
    r = flight_cli("demo", timeout=100)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(order-worker)" in r.stdout and "Traceback for thread" in r.stdout
    assert "EXPR:       target" in r.stdout and '"port": 5432' in r.stdout
    assert "detached: True; target still running: True" in r.stdout
    assert "error:" not in r.stdout
