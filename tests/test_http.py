"""`flight-mcp --http`: a real server process on loopback (port 0: the kernel picks a free one, the
server prints it), the SDK's streamable-HTTP client, real targets. A token opens it, none or another
gets 401; a stack and a watch whose progress streams; SIGTERM mid-watch stops it with the target's
instrumentation removed; what it refuses to start with."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from .conftest import version_params, wait_until
from .mcp_client import text_of
from .test_watch import instrumented

pytestmark = pytest.mark.timeout(180)

URL = re.compile(r"at (https?://127\.0\.0\.1:\d+/mcp) ")
TOKEN = "test-token-" + "x" * 32


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, banner: str, state: str):
        self.proc, self.url, self.banner, self.state = proc, url, banner, state

    def stop(self, sig=signal.SIGTERM, timeout=20) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the server did not stop within {timeout}s of {sig!r}")
        return self.proc.returncode, err


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flight_mcp.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def http_server(tmp_path):
    """http_server(*args, env=None) -> Server, listening; every one started is killed at teardown. The
    user's state directory is a fresh one under tmp_path (never the real ~/.local/state)."""
    started = []

    def start(*args: str, env: dict | None = None) -> Server:
        state = str(tmp_path / "state")
        proc = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", "--http", "127.0.0.1:0", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "XDG_STATE_HOME": state, **(env or {})})
        started.append(proc)
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:   # readline blocks; the pytest timeout bounds a silent server
            line = proc.stderr.readline()
            if not line:
                raise AssertionError(f"the server exited ({proc.wait()}) before listening: {''.join(banner)}")
            banner.append(line)
            if line.startswith("flight-mcp: bearer token:"):
                url = URL.search("".join(banner))
                assert url, banner
                return Server(proc, url.group(1), "".join(banner), state)
        raise AssertionError("the server did not say where it listens")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@asynccontextmanager
async def session(url: str, token: str | None, statuses: list | None = None, verify=None):
    """An MCP session over streamable HTTP, sending `Authorization: Bearer token` when given; the
    status of every HTTP response is appended to `statuses`; `verify`: an SSL context for https."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    timeout = httpx2.Timeout(30, read=120)
    client = (create_mcp_http_client(headers=headers, timeout=timeout) if verify is None else
              httpx2.AsyncClient(headers=headers, timeout=timeout, verify=verify))
    async with client:
        if statuses is not None:
            async def seen(response):
                statuses.append(response.status_code)
            client.event_hooks["response"].append(seen)
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                yield s


def generated_token(server: Server) -> str:
    path = os.path.join(server.state, "flight-mcp", "http-token")
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert stat.S_IMODE(os.lstat(os.path.dirname(path)).st_mode) == 0o700
    with open(path) as f:
        return f.read().strip()


@pytest.mark.parametrize("version", version_params(["3.8", "3.12"]))
def test_tools_stack_and_streamed_watch_over_http(spawn, http_server, version):
    t = spawn(version, "demo")
    server = http_server()
    token = generated_token(server)
    assert f"{server.state}/flight-mcp/http-token (generated now, mode 0600)" in server.banner, server.banner
    assert token not in server.banner   # the path is printed, never the secret
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async def go():
        async with session(server.url, token) as s:
            names = {tool.name for tool in (await s.list_tools()).tools}
            assert {"stack", "watch", "getglobal", "list_processes"} <= names, names
            r = await s.call_tool("stack", {"pid": t.pid})
            assert not r.is_error, text_of(r)
            threads = {th["name"]: th for th in r.structured_content["threads"]}
            assert "order-worker" in threads and any(th["main"] for th in threads.values()), threads.keys()
            assert "order-worker" in text_of(r)
            r = await s.call_tool("watch", {"pid": t.pid, "module": "__main__", "cls": "OrderService",
                                            "method": "process_order", "limit": 3, "filter_expr": "args[0] > 0",
                                            "expr": "args[0]"}, progress_callback=on_progress)
            assert not r.is_error, text_of(r)
            return r.structured_content

    out = anyio.run(go)
    assert out["captured"] == 3 and out["stopped"] == "limit"
    # each capture arrived as a progress notification on the call's event stream, before the answer
    assert [p[0] for p in progress] == [1, 2, 3] and all(p[1] == 3 for p in progress), progress
    assert "__main__.OrderService.process_order" in progress[0][2]
    assert not instrumented(t.pid, version)
    code, err = server.stop()
    assert code == 0, err
    assert t.alive()


def test_no_token_or_a_wrong_one_gets_401(http_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = http_server("--token-file", str(token_file))
    assert f"bearer token: {token_file} (file)" in server.banner
    assert not os.path.exists(os.path.join(server.state, "flight-mcp")), "a token was given: none is generated"
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx2.Client(timeout=30) as http:
        for headers, error in (({}, "invalid_request"), ({"Authorization": "Bearer " + "y" * 43}, "invalid_token"),
                               ({"Authorization": "Bearer " + TOKEN[:-1]}, "invalid_token"),
                               ({"Authorization": "Basic " + TOKEN}, "invalid_request")):
            r = http.post(server.url, json=initialize, headers={**accept, **headers})
            assert r.status_code == 401, (headers, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error"] == error and r.json()["error_description"], r.text
            assert r.headers["www-authenticate"].startswith("Bearer ")
        # every path and method, not only the MCP endpoint's POST
        assert http.get(server.url.replace("/mcp", "/anything")).status_code == 401
        assert http.delete(server.url).status_code == 401
        r = http.post(server.url, json=initialize, headers={**accept, "Authorization": "Bearer " + TOKEN})
        assert r.status_code == 200 and r.headers.get("mcp-session-id"), (r.status_code, r.text)

    async def sdk(token, statuses):
        async with session(server.url, token, statuses) as s:
            return [tool.name for tool in (await s.list_tools()).tools]

    statuses = []
    assert "stack" in anyio.run(sdk, TOKEN, statuses) and 401 not in statuses
    for wrong in (None, "z" * 43):
        statuses = []
        with pytest.raises(Exception) as e:   # the SDK client's initialize fails
            anyio.run(sdk, wrong, statuses)
        assert statuses == [401], (statuses, repr(e.value))
    code, err = server.stop(signal.SIGINT)
    assert code == 0, err


@pytest.mark.parametrize("version", version_params(["3.12"]))
def test_sigterm_mid_watch_removes_instrumentation(spawn, http_server, version):
    t = spawn(version, "demo")
    server = http_server(env={"FLIGHT_MCP_TOKEN": TOKEN})
    assert "bearer token: $FLIGHT_MCP_TOKEN (environment variable)" in server.banner
    assert not instrumented(t.pid, version)
    outcome = {}

    async def long_watch():
        try:
            async with session(server.url, TOKEN) as s:
                outcome["result"] = await s.call_tool("watch", {
                    "pid": t.pid, "module": "__main__", "cls": "OrderService", "method": "process_order",
                    "limit": 100000, "timeout_s": 120})
        except BaseException as e:   # the server went away under the call: that is the test
            outcome["error"] = e

    async def go():
        async with anyio.create_task_group() as tg:
            tg.start_soon(long_watch)
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: instrumented(t.pid, version), timeout=60,
                                                              interval=0.2, what="the watch to instrument"))
            code, err = await anyio.to_thread.run_sync(server.stop)
            assert code == 0, err
            assert "stopped: open calls cancelled" in err, err
            with anyio.fail_after(60):
                while not outcome:
                    await anyio.sleep(0.1)

    anyio.run(go)
    assert not instrumented(t.pid, version)
    assert t.alive()


def test_refusals(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("FLIGHT_MCP_TOKEN", None)
    # a non-loopback address without a token the operator gave (nothing is bound: refused before)
    for where in ("0.0.0.0:0", "[::]:0", "example.invalid:0"):
        r = cli("--http", where, env=env)
        assert r.returncode == 2 and "not a loopback address" in r.stderr and "--token-file" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "state" / "flight-mcp"), "refused before generating a token"
    # a token file others can read, or that is not ours to trust
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    r = cli("--http", "127.0.0.1:0", "--token-file", str(token_file), env=env)
    assert r.returncode == 1 and "[unsafe_token_file]" in r.stderr and "0644" in r.stderr, r.stderr
    assert f"chmod 600 {token_file}" in r.stderr and TOKEN not in r.stderr + r.stdout
    token_file.chmod(0o600)
    token_file.write_text("short")
    r = cli("--http", "127.0.0.1:0", "--token-file", str(token_file), env=env)
    assert r.returncode == 1 and "[bad_token]" in r.stderr and "at least 16" in r.stderr, r.stderr
    r = cli("--http", "127.0.0.1:0", env={**env, "FLIGHT_MCP_TOKEN": "has space in it and is long"})
    assert r.returncode == 1 and "[bad_token]" in r.stderr, r.stderr
    # a generated token file someone loosened is not used
    state = tmp_path / "state" / "flight-mcp"
    state.mkdir(parents=True, mode=0o700)
    (state / "http-token").write_text(TOKEN)
    (state / "http-token").chmod(0o640)
    r = cli("--http", "127.0.0.1:0", env=env)
    assert r.returncode == 1 and "[unsafe_token_file]" in r.stderr and "rm " in r.stderr, r.stderr
    # flags that mean nothing without --http, and a bad address
    r = cli("--token-file", str(token_file), "--stdio", env=env)
    assert r.returncode == 2 and "go with --http" in r.stderr, r.stderr
    r = cli("--http", "127.0.0.1:99999", env=env)
    assert r.returncode == 2 and "port must be" in r.stderr, r.stderr
    r = cli("--http", "0", "--tls-cert", str(token_file), env=env)
    assert r.returncode == 2 and "both --tls-cert and --tls-key" in r.stderr, r.stderr


def test_tls(http_server, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test --tls-cert with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = http_server("--tls-cert", str(cert), "--tls-key", str(key), env={"FLIGHT_MCP_TOKEN": TOKEN})
    assert server.url.startswith("https://127.0.0.1:"), server.banner
    trust = ssl.create_default_context(cafile=str(cert))

    async def tools():
        async with session(server.url, TOKEN, verify=trust) as s:
            return [tool.name for tool in (await s.list_tools()).tools]

    assert "stack" in anyio.run(tools)
    with httpx2.Client(timeout=30, verify=trust) as http:
        assert http.post(server.url, json={}).status_code == 401
    with httpx2.Client(timeout=30) as http, pytest.raises(httpx2.HTTPError):   # plain HTTP is not served
        http.post(server.url.replace("https://", "http://"), json={}, headers={"Authorization": "Bearer " + TOKEN})
    code, err = server.stop()
    assert code == 0, err
