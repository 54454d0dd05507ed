"""--http's address parsing and the bearer check in front of the MCP app (called as ASGI, in-process)."""
import json

import anyio
import pytest

from flight_mcp.errors import FlightError
from flight_mcp.http_server import BearerAuth, is_loopback, parse_listen, url_of
from flight_mcp.tokens import Token

TOKEN = "t" * 43


@pytest.mark.parametrize("value, expected", [
    ("8765", ("127.0.0.1", 8765)), ("127.0.0.1:8765", ("127.0.0.1", 8765)), (":8765", ("127.0.0.1", 8765)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9)), ("localhost:0", ("localhost", 0)),
    ("node.example:65535", ("node.example", 65535)),
])
def test_parse_listen(value, expected):
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value, why", [("::1:80", "brackets"), ("abc", "port must be"), ("1.2.3.4:", "port must be"),
                                        ("1.2.3.4:65536", "port must be"), ("1.2.3.4:-1", "port must be")])
def test_parse_listen_refuses(value, why):
    with pytest.raises(FlightError, match=why) as e:
        parse_listen(value)
    assert e.value.code == "usage"


def test_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "example.com", "localhost.evil"]))
    assert url_of("::1", 5, True) == "https://[::1]:5/mcp" and url_of("127.0.0.1", 5, False) == "http://127.0.0.1:5/mcp"


def call(headers, scope_type="http", path="/mcp"):
    """What BearerAuth answers to one request: (status, headers, body, whether the app ran)."""
    ran = []

    async def app(scope, receive, send):
        ran.append(scope["type"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": scope_type, "path": path, "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    anyio.run(BearerAuth(app, Token(TOKEN, "test")), scope, receive, send)
    if scope_type != "http":
        return sent, ran
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"], bool(ran)


def test_right_token_reaches_the_app():
    for header in ("Bearer " + TOKEN, "bearer " + TOKEN, "BEARER  " + TOKEN + " "):
        assert call({"Authorization": header}) == (200, {}, b"app", True)


@pytest.mark.parametrize("headers, error", [
    ({}, "invalid_request"), ({"Authorization": ""}, "invalid_request"), ({"Authorization": "Bearer"}, "invalid_request"),
    ({"Authorization": "Bearer "}, "invalid_request"), ({"Authorization": "Basic " + TOKEN}, "invalid_request"),
    ({"Authorization": TOKEN}, "invalid_request"), ({"Authorization": "Bearer " + TOKEN[:-1]}, "invalid_token"),
    ({"Authorization": "Bearer " + TOKEN + "t"}, "invalid_token"), ({"Authorization": "Bearer x"}, "invalid_token"),
    ({"X-Token": TOKEN}, "invalid_request"),
])
def test_anything_else_is_401_json(headers, error):
    status, h, body, ran = call(headers)
    assert (status, ran) == (401, False)
    assert h[b"content-type"] == b"application/json" and int(h[b"content-length"]) == len(body)
    assert h[b"www-authenticate"] == f'Bearer realm="flight-mcp", error="{error}"'.encode()
    data = json.loads(body)
    assert data["error"] == error and ("Bearer" in data["error_description"] or "token" in data["error_description"])
    assert TOKEN.encode() not in body


def test_every_path_and_websockets_need_it_lifespan_does_not():
    assert call({}, path="/")[0] == 401 and call({}, path="/anything")[0] == 401
    sent, ran = call({}, scope_type="websocket")
    assert sent == [{"type": "websocket.close", "code": 1008}] and not ran
    sent, ran = call({}, scope_type="lifespan")
    assert ran == ["lifespan"]
