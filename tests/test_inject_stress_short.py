"""A short run of bench/inject_stress.py: 20 full injections (attach + stack + detach) into
targets that are CPU-busy, allocation-heavy and checking their own floating-point results."""
import importlib.util
from pathlib import Path

import pytest

from .conftest import version_params

pytestmark = pytest.mark.timeout(300)

_BENCH = Path(__file__).resolve().parent.parent / "bench" / "inject_stress.py"
_spec = importlib.util.spec_from_file_location("inject_stress", _BENCH)
inject_stress = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inject_stress)


@pytest.mark.parametrize("version", version_params(["3.12"]))
@pytest.mark.parametrize("kind,count", [("cpu", 8), ("alloc", 6), ("float", 6)])
def test_repeated_injection_never_harms_the_target(version, kind, count):
    # a hang is no answer at all: 20 s per injection leaves a loaded machine (other tests run beside) room
    r = inject_stress.run_kind(version, kind, count, deadline_s=20.0)
    assert (r["crash"], r["hang"], r["wrong"], r["stall"]) == (0, 0, 0, 0), (r, inject_stress.MESSAGES)
    assert r["ok"] == count, (r, inject_stress.MESSAGES)
