"""stdin and stdout for the MCP SDK's stdio_server, read and written by the event loop itself.

The SDK's own stdio streams are files run on worker threads: every message in costs a thread hand-off
(readline), every message out two (write, then flush), each a few hundred microseconds on a busy
machine, and each of them paid again by a ping. Here the loop reads the pipe when epoll says it is
readable and writes through a pipe transport (what anyio uses for a subprocess's pipes). The SDK does
everything else as before: it parses each line, and writes each message as one line.

Used when stdin and stdout are pipes or sockets (an MCP client's); anything else (a terminal, a file)
keeps the SDK's streams. As the SDK does while it serves, fd 0 reads /dev/null and fd 1 writes to
stderr, so that a stray print cannot corrupt the protocol; both are restored at the end.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import stat
from contextlib import asynccontextmanager
from typing import AsyncIterator


def usable() -> bool:
    """Whether stdin and stdout are a pipe or a socket each (node's child processes get sockets), and
    stdout is a file of its own: not stderr's (whose writes would see the non-blocking mode set on it),
    nor stdin's socket (the writing transport takes a readable stdout for the client hanging up)."""
    try:
        st_in, st_out, st_err = os.fstat(0), os.fstat(1), os.fstat(2)
    except OSError:
        return False
    kinds = [stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) for st in (st_in, st_out)]
    files = {(st.st_dev, st.st_ino) for st in (st_in, st_out, st_err)}
    return all(kinds) and len(files) == 3


class _Lines(asyncio.Protocol):
    """The lines read from stdin, decoded as the SDK decodes them (UTF-8, errors replaced)."""

    def __init__(self):
        self.transport: asyncio.ReadTransport | None = None
        self._buf = b""
        self._lines: list[str] = []
        self._eof = False
        self._wake = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if b"\n" in self._buf:
            *lines, self._buf = self._buf.split(b"\n")
            self._lines.extend(line.decode("utf-8", "replace") + "\n" for line in lines)
            self._wake.set()

    def eof_received(self) -> bool:
        self.connection_lost(None)
        return False

    def connection_lost(self, exc) -> None:   # (after eof_received too: once is enough)
        if self._buf:   # a last line without its newline
            self._lines.append(self._buf.decode("utf-8", "replace"))
            self._buf = b""
        self._eof = True
        self._wake.set()

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            if self._eof:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._lines.pop(0)


class _Writer(asyncio.Protocol):
    """stdout as the SDK writes it: write(text) then flush(). A write returns once the pipe took all of
    it, as the SDK's blocking write did, but waits without blocking the loop when the pipe is full."""

    def __init__(self):
        self.transport: asyncio.WriteTransport | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=0)   # paused while anything is left unwritten

    def pause_writing(self) -> None:
        self._resumed.clear()

    def resume_writing(self) -> None:
        self._resumed.set()

    def connection_lost(self, exc) -> None:
        self._lost = True
        self._resumed.set()

    async def write(self, text: str) -> None:
        if self._lost or self.transport.is_closing():
            raise BrokenPipeError(errno.EPIPE, "the MCP client closed stdout")
        self.transport.write(text.encode("utf-8"))
        await self._resumed.wait()

    async def flush(self) -> None:
        pass   # the transport writes as soon as the pipe takes it


@asynccontextmanager
async def streams() -> AsyncIterator[tuple[_Lines, _Writer]]:
    """(stdin, stdout) for mcp.server.stdio.stdio_server(stdin, stdout); call only when usable()."""
    loop = asyncio.get_running_loop()
    private = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in (0, 1)]
    null = os.open(os.devnull, os.O_RDONLY)
    reader = writer = None
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
        _, reader = await loop.connect_read_pipe(_Lines, os.fdopen(private[0], "rb", buffering=0, closefd=False))
        _, writer = await loop.connect_write_pipe(_Writer, os.fdopen(private[1], "wb", buffering=0, closefd=False))
        yield reader, writer
    finally:
        for fd, mine in zip((0, 1), private):
            os.set_blocking(mine, True)   # the file is the client's pipe too
            os.dup2(mine, fd)
        if reader is not None:
            reader.transport.close()
        if writer is not None:
            writer.transport.abort()   # (nothing is left to write: every write waited until it was written)
        for fd in (null, *private):
            os.close(fd)
