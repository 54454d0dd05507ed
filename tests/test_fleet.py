"""Worker fleets end to end: a real gunicorn (sync and gthread workers) and a real uvicorn with several
workers serve a small app on loopback; one call runs on every worker (workers_of) or a list of pids,
with requests driven during the call. gunicorn and uvicorn are the test extra's (pure Python): the target
Python imports them from a directory holding just them (no install into the pyenv interpreters)."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import flight_cli, version_params, wait_until
from tests.mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(150)

VERSIONS = version_params(("3.12",))
# gunicorn imports on every target version; uvicorn's dependencies want a recent one
ALL = version_params()
OLD_AND_NEW = version_params(("3.8", "3.13"))
WORKERS = 3

APP = '''
import time


def handle(path, n):
    time.sleep(1.0 if path == "/slow" else 0.01)
    return "%s %d" % (path, n)


def app(environ, start_response):
    body = handle(environ["PATH_INFO"], len(environ.get("QUERY_STRING", ""))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = handle(scope["path"], 0).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
'''

GUNICORN = '''
import sys
# gthread: 2 threads a worker (gunicorn turns sync with threads > 1 into gthread, so sync gets 1)
sys.argv = ["gunicorn", "-w", "{workers}", "-k", "{kind}", "--threads", "{threads}", "-b", "127.0.0.1:{port}",
            "--graceful-timeout", "1", "fleet_app:app"]
from gunicorn.app.wsgiapp import run
run()
'''

UVICORN = '''
import uvicorn
if __name__ == "__main__":
    uvicorn.run("fleet_app:asgi", host="127.0.0.1", port={port}, workers={workers}, log_level="warning")
'''


@pytest.fixture(scope="session")
def server_path(tmp_path_factory) -> str:
    """A directory with gunicorn, uvicorn and what they import, linked from flight-mcp's environment."""
    where = tmp_path_factory.mktemp("fleet-packages")
    for name in ("gunicorn", "uvicorn", "h11", "click", "packaging"):
        spec = importlib.util.find_spec(name)
        if spec is None:
            pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
        (where / name).symlink_to(Path(spec.origin).parent)
    return str(where)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fleet:
    def __init__(self, target, port: int):
        self.target, self.port, self.master = target, port, target.pid
        self.drivers: list[Driver] = []

    def workers(self) -> list[int]:
        out = []
        for c in psutil.Process(self.master).children():
            try:
                if "resource_tracker" not in " ".join(c.cmdline()):
                    out.append(c.pid)
            except psutil.Error:
                pass
        return sorted(out)

    def get(self, path: str = "/") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read().decode()

    def drive(self, clients: int = 6, path: str = "/order?x") -> "Driver":
        """Requests from several clients (a new connection each) in the background until stop()."""
        self.drivers.append(Driver(self, clients, path))
        return self.drivers[-1]


class Driver:
    def __init__(self, fleet: Fleet, clients: int, path: str):
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(fleet, path), daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self, fleet: Fleet, path: str) -> None:
        while not self.stopped.is_set():
            try:
                fleet.get(path)
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(10)


@pytest.fixture
def serve(spawn, tmp_path, server_path):
    """serve(version, "gunicorn-sync" | "gunicorn-gthread" | "uvicorn") -> Fleet, its workers all up."""
    started: list[Fleet] = []

    def _serve(version: str, kind: str) -> Fleet:
        (tmp_path / "fleet_app.py").write_text(APP)
        port = _free_port()
        source = (UVICORN if kind == "uvicorn" else GUNICORN).format(
            workers=WORKERS, kind=kind.split("-")[-1], threads=2 if kind == "gunicorn-gthread" else 1, port=port)
        env = {"PYTHONPATH": f"{server_path}{os.pathsep}{tmp_path}"}
        fleet = Fleet(spawn(version, source, ready=None, env=env), port)
        started.append(fleet)

        def up():
            try:
                fleet.get("/")
            except OSError:
                return False
            return len(fleet.workers()) >= WORKERS
        wait_until(up, timeout=30, what=f"{kind} serving with {WORKERS} workers")
        return fleet

    yield _serve
    for fleet in started:   # the master stops its workers; any left are killed by pid
        for driver in fleet.drivers:
            driver.stop()
        workers = fleet.workers() if fleet.target.alive() else []
        if fleet.target.alive():
            fleet.target.proc.send_signal(signal.SIGTERM)
            try:
                fleet.target.proc.wait(timeout=5)
            except Exception:
                pass
        for pid in workers:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        fleet.target.kill()


def _json(*args: str) -> dict:
    r = flight_cli(*args, "--json", timeout=90)
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


@pytest.mark.parametrize("version,kind", [*(pytest.param(p.values[0], "gunicorn-sync", marks=p.marks,
                                                          id=f"gunicorn-sync-{p.id}") for p in ALL),
                                          *(pytest.param(p.values[0], "gunicorn-gthread", marks=p.marks,
                                                         id=f"gunicorn-gthread-{p.id}") for p in VERSIONS)])
def test_stack_across_gunicorn_workers_groups_identical_stacks(serve, version, kind):
    fleet = serve(version, kind)
    workers = fleet.workers()
    driver = fleet.drive(clients=1, path="/slow")   # one worker busy in handle() (1 s a request), the others idle
    text = flight_cli("--workers-of", str(fleet.master), "--cmd", "stack", timeout=90)   # attaches every worker
    assert text.returncode == 0, text.stderr
    assert f"stack on {WORKERS} processes (workers of {fleet.master}" in text.stdout
    assert re.search(r"^\d+ threads? in \d+ process(es)? \(", text.stdout, re.M), text.stdout

    def grouped():   # a moment when the idle workers wait in select and the busy one is in handle()
        out = _json("--workers-of", str(fleet.master), "--cmd", "stack")
        groups = out["merged"]["stack_groups"]
        if any(len(g["processes"]) > 1 for g in groups) and \
                any("handle" in [f["name"] for f in g["frames"]] for g in groups):
            return out
    out = wait_until(grouped, timeout=60, interval=0.2, what="idle workers grouped, the busy one apart")
    assert out["tool"] == "stack" and out["workers_of"] == fleet.master
    assert out["pids"] == workers and out["answered"] == WORKERS and out["failed"] == 0
    assert {p["pid"] for p in out["processes"]} == set(workers)
    assert all(p["result"]["pid"] == p["pid"] for p in out["processes"])
    groups = out["merged"]["stack_groups"]
    assert sum(g["count"] for g in groups) == sum(len(p["result"]["threads"]) for p in out["processes"])
    threads = {(p["pid"], t["native_id"]): t for p in out["processes"] for t in p["result"]["threads"]}
    for g in groups:   # a group is threads with the very same frames, and only those
        places = {tuple((f["file"], f["line"], f["name"]) for f in threads[(t["pid"], t["native_id"])]["frames"])
                  for t in g["threads"]}
        assert places == {tuple((f["file"], f["line"], f["name"]) for f in g["frames"])}
    driver.stop()


@pytest.mark.parametrize("version", OLD_AND_NEW)
def test_watch_across_gunicorn_workers_tags_pids(serve, version):
    fleet = serve(version, "gunicorn-gthread")
    workers = fleet.workers()
    driver = fleet.drive(clients=8)
    r = flight_cli(",".join(map(str, workers)), "--cmd", "watch fleet_app handle -n 15 --timeout 7",
                   "--json", timeout=90)
    driver.stop()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["pids"] == workers and out["failed"] == 0
    records = out["merged"]["records"]
    assert len({rec["pid"] for rec in records}) > 1, records   # calls from more than one worker
    assert [rec["time"] for rec in records] == sorted(rec["time"] for rec in records)
    by_pid = {p["pid"]: p["result"] for p in out["processes"]}
    for rec in records:   # each tag points at that worker's own record
        own = by_pid[rec["pid"]]["records"][rec["index"]]
        assert own["time"] == rec["time"] and own["view"] is not None


@pytest.mark.parametrize("version", VERSIONS)
def test_uvicorn_workers_over_mcp(serve, version):
    fleet = serve(version, "uvicorn")
    workers = fleet.workers()
    driver = fleet.drive(clients=1)

    async def go():
        async with mcp_session() as s:
            for _ in range(20):   # the first attaches (and wakes every worker): until idle ones wait alike
                stack = await s.call_tool("stack", {"workers_of": fleet.master})
                groups = (stack.structured_content or {}).get("merged", {}).get("stack_groups") or []
                if any(len(g["processes"]) > 1 for g in groups):
                    break
            mon = await s.call_tool("monitor", {"pids": workers, "module": "fleet_app", "method": "handle",
                                                "cycle_s": 1, "limit": 2})   # timeout_s derived
            both = await s.call_tool("stack", {"pid": workers[0], "pids": workers})
            return stack, mon, both
    stack, mon, both = asyncio.run(go())
    driver.stop()
    assert not stack.is_error, text_of(stack)
    sc = stack.structured_content
    assert sc["answered"] == len(workers) and sc["workers_of"] == fleet.master
    assert any(len(g["processes"]) > 1 for g in sc["merged"]["stack_groups"]), text_of(stack)
    assert re.search(r"^\d+ threads? in [2-9] processes \(", text_of(stack), re.M), text_of(stack)
    assert not mon.is_error, text_of(mon)
    fig = mon.structured_content["merged"]["figures"]
    assert fig["total"]["calls"] == sum(x["calls"] for x in fig["by_pid"].values()) > 0
    assert both.is_error and "exactly one of" in text_of(both)


@pytest.mark.parametrize("version", VERSIONS)
def test_worker_killed_mid_call_is_reported_not_fatal(serve, version):
    fleet = serve(version, "gunicorn-sync")
    workers = fleet.workers()
    victim = workers[0]
    assert flight_cli(str(victim), "--cmd", "stack", timeout=60).returncode == 0   # attached, then killed mid-watch

    def kill_later():
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)
    killer = threading.Thread(target=kill_later)
    killer.start()
    driver = fleet.drive()
    out = _json(",".join(map(str, workers)), "--cmd", "watch fleet_app handle -n 1000 --timeout 5")
    killer.join()
    driver.stop()
    answers = {p["pid"]: p for p in out["processes"]}
    assert answers[victim]["error"] is not None and answers[victim]["result"] is None, answers[victim]
    assert out["failed"] == 1 and out["answered"] == len(workers) - 1
    assert all(answers[p]["result"] is not None for p in workers[1:])
