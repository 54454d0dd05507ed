"""mcp_stdio: the MCP server's stdin/stdout read and written by the event loop, on real pipes put in place of
fd 0 and 1 for the test: lines as the SDK reads them, writes that wait for a client reading slowly instead of
blocking the loop, fd 0/1 diverted while serving and restored after."""
import asyncio
import contextlib
import os
import stat
import threading

from flight_mcp import mcp_stdio


@contextlib.contextmanager
def std_pipes():
    """(write end of our stdin, read end of our stdout), in place of fd 0 and 1 for the block (in the
    test's body: pytest's output capture puts its own file back on fd 1 between a fixture and the test)."""
    saved = [os.dup(0), os.dup(1)]
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    os.dup2(stdin_r, 0)
    os.dup2(stdout_w, 1)
    os.close(stdin_r)
    os.close(stdout_w)
    try:
        yield stdin_w, stdout_r
    finally:
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        for fd in saved + [stdout_r]:
            os.close(fd)


def test_lines_in_writes_out_and_the_std_fds_diverted_then_restored():
    with std_pipes() as (stdin_w, stdout_r):
        lines, ticks, got = _serve(stdin_w, stdout_r)
    assert lines == ['{"a": 1}\n', '{"b": "\xe9"}\n', "\ufffd\n", '{"c": 3}']
    assert bytes(got) == (BIG + "\nok\n").encode()
    assert ticks > 1   # the loop ran while the big write waited for the reader


BIG = "x" * (1 << 20)   # far more than a pipe holds: the write waits for the reader, the loop runs on


def _serve(stdin_w, stdout_r):
    assert mcp_stdio.usable()
    before = [os.fstat(fd).st_ino for fd in (0, 1)]
    big = BIG
    got = bytearray()
    reader = threading.Thread(target=lambda: client(), daemon=True)

    def client():
        os.write(stdin_w, '{"a": 1}\n{"b": "\xe9"}\n'.encode() + b"\xff\n")   # not UTF-8: replaced, as the SDK does
        os.write(stdin_w, b'{"c": 3}')   # a last line without its newline
        os.close(stdin_w)
        while len(got) < len(big) + 4:
            got.extend(os.read(stdout_r, 65536))

    async def serve():
        async with mcp_stdio.streams() as (stdin, stdout):
            assert stat.S_ISCHR(os.fstat(0).st_mode)             # /dev/null
            assert os.fstat(1).st_ino == os.fstat(2).st_ino      # stderr
            reader.start()
            lines = [line async for line in stdin]
            ticks = 0

            async def tick():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            ticker = asyncio.ensure_future(tick())
            await stdout.write(big + "\n")
            await stdout.write("ok\n")
            await stdout.flush()
            ticker.cancel()
            return lines, ticks

    lines, ticks = asyncio.run(asyncio.wait_for(serve(), 20))
    reader.join(20)
    assert [os.fstat(fd).st_ino for fd in (0, 1)] == before   # restored, blocking as they were
    assert os.get_blocking(0) and os.get_blocking(1)
    return lines, ticks, got


def test_a_terminal_or_stdout_shared_with_stdin_or_stderr_keeps_the_sdks_streams():
    with std_pipes():
        assert mcp_stdio.usable()
        os.dup2(0, 1)   # stdout the same pipe as stdin
        assert not mcp_stdio.usable()
        os.dup2(2, 1)   # stdout the same file as stderr
        assert not mcp_stdio.usable()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)   # a character device, not a pipe
        os.close(null)
        assert not mcp_stdio.usable()
