"""The agent's JSON on the wire (agent/server.py loads/dumps): json's C accelerator used directly, so a
bare target imports neither json nor re to answer; it must read and write exactly what json does."""
import json
import math

import pytest

from flight_mcp.agent import server


class Opaque:
    def __repr__(self):
        return "<Opaque>"


VALUES = [
    {"id": 7, "result": {"threads": [{"name": "MainThread", "native_id": 12, "daemon": False, "frames": []}]}},
    {"id": None, "error": {"kind": "protocol", "message": "request is not JSON"}},
    {"a": [1, -2, 2.5, 1e300, -0.0, 1 / 3, True, False, None, "é\x00\ud800\n\"\\", {}]},
    {1: "int key", None: "none key", 2.5: "float key", True: "bool key"},
    {"not json": Opaque(), "nested": [[Opaque()]], "set": {1}},
    {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
    "a string", 12, [], [[[[]]]],
]


def test_the_codec_is_the_accelerator_not_the_json_module():
    loads, dumps = server._json()
    assert loads is not json.loads and "c_dumps" in dumps.__name__


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_what_json_dumps_writes(value):
    assert server.dumps(value) == json.dumps(value, default=repr, ensure_ascii=False)


@pytest.mark.parametrize("value", VALUES[:4] + VALUES[5:])
def test_loads_reads_what_json_loads_reads(value):
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), " \t" + json.dumps(value, indent=1) + "\r\n"):
        got, want = server.loads(text), json.loads(text)
        assert repr(got) == repr(want) or (math.isnan(got["nan"]) and math.isnan(want["nan"]))


@pytest.mark.parametrize("text", ["", " ", "{", '{"a": 1} x', "nul", "[1,]", '{"a" 1}', '"\\x"', "[1] [2]", "\x00"])
def test_what_json_refuses_is_refused_as_a_value_error(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        server.loads(text)


def test_a_cycle_is_refused_and_the_next_message_is_written_whole():
    cycle = []
    cycle.append(cycle)
    with pytest.raises(ValueError):
        server.dumps({"id": 1, "result": cycle})
    shared = [1]
    assert server.dumps({"a": shared, "b": shared}) == '{"a": [1], "b": [1]}'   # not taken for a cycle


def test_the_peer_uid_is_the_kernels_word():
    """_peer_uid reads SO_PEERCRED's struct ucred (pid, uid, gid) without the struct module."""
    import os
    import socket
    import struct
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        raw = a.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        assert struct.unpack("3i", raw) == (os.getpid(), os.getuid(), os.getgid())
        assert server._peer_uid(a) == os.getuid()
