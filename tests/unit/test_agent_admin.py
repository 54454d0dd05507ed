"""The agent's info command called in this interpreter: its facts are exactly what attach's Result
holds (no process is started)."""
import sys

import pytest

from flight_mcp.agent import cmd_admin, server
from flight_mcp.tools.attach import AttachResult, render_attach

pytestmark = pytest.mark.timeout(30)


def test_info_facts_fit_the_attach_result(monkeypatch):
    monkeypatch.setitem(server._state, "version", "9.9.9")
    monkeypatch.setitem(server._state, "build", "0123456789abcdef")
    facts = cmd_admin.info({}, None)
    how = {"method": "pyinjector", "thread": 12, "syscall": 7, "tries": 1, "inject_ms": 3.5, "ms": 9.0}
    r = AttachResult(**facts, injection=how)  # extra="forbid": a fact without a field fails here
    assert r.python_version == "%d.%d.%d" % sys.version_info[:3] and r.agent_build == "0123456789abcdef"
    assert r.thread_count >= 1 and r.threading_imported
    assert render_attach(r, False).splitlines()[1] == \
        "agent 9.9.9: pyinjector via thread 12 (blocked in syscall 7), 9.0 ms"
    # Facts left out of the JSON when they do not apply: an answer from a running agent says only that.
    kept = AttachResult(**facts, injection={"method": "already attached"})
    assert kept.model_dump(mode="json")["injection"] == {"method": "already attached"}
    assert render_attach(kept, False).splitlines()[1] == "agent 9.9.9: already attached"
