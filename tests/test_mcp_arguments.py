"""MCP arguments checked as the tool's own Params check them, over the real SDK client and a real
`flight-mcp --stdio`: an unknown argument is refused naming the closest known one (the SDK alone drops it
and runs with the default), and a wrong type is worded as ours, without pydantic's raw text and URL.
No target is needed: a refused call never reaches a process."""
import anyio
import pytest

from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(120)


def calls(*requests):
    async def main():
        async with mcp_session() as s:
            return [await s.call_tool(name, args) for name, args in requests]
    return anyio.run(main)


def test_unknown_and_mistyped_arguments_get_our_errors():
    limits, two, typed, missing, fine = calls(
        ("watch", {"pid": 1, "module": "__main__", "method": "f", "limits": 3}),
        ("stack", {"pid": 1, "asyncTasks": True, "zzz_qq": 1}),
        ("watch", {"pid": 1, "module": "__main__", "method": "f", "limit": "many", "timeout_s": [1]}),
        ("getglobal", {"module": "__main__"}),
        ("list_processes", {}),
    )
    text = text_of(limits)
    assert limits.is_error and text.startswith("usage: watch: unknown argument 'limits' (did you mean 'limit'?)")
    assert "its arguments: pid, timeout_s, module" in text
    assert limits.structured_content["error"] == {**limits.structured_content["error"], "code": "usage",
                                                  "argument": "limits"}
    text = text_of(two)
    assert two.is_error and "unknown arguments 'asyncTasks' (did you mean 'async_tasks'?), 'zzz_qq';" in text
    for result in (typed, missing):
        assert result.is_error and text_of(result).startswith("usage: ")
        assert "pydantic" not in text_of(result) and "https://" not in text_of(result)
    assert "limit: " in text_of(typed) and "timeout_s: " in text_of(typed)
    assert typed.structured_content["error"]["argument"] in ("limit", "timeout_s")
    assert text_of(missing).startswith("usage: getglobal: missing required argument 'pid'")
    assert missing.structured_content["error"]["argument"] == "pid"
    assert not fine.is_error, text_of(fine)
