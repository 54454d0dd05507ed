"""`flight-mcp --http [HOST:]PORT`: the same MCP server as --stdio, over the SDK's streamable HTTP
transport (its Starlette app, served by uvicorn), behind a bearer token.

- Loopback unless told otherwise; any other address needs a token the operator gave (FLIGHT_MCP_TOKEN
  or --token-file), never the generated one (see tokens.py).
- Every HTTP request carries `Authorization: Bearer <token>`, compared in constant time; without it,
  or with another token, the answer is 401 with a JSON error, before the MCP app sees the request.
- TLS with --tls-cert/--tls-key (uvicorn's ssl options), or a reverse proxy in front (README).
- SIGINT/SIGTERM stop it as the end of stdin stops --stdio: open calls are cancelled and every session
  with a target is closed (server.serving), which removes every instrumentation.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import sys

from .errors import FlightError

MCP_PATH = "/mcp"
DEFAULT_HOST = "127.0.0.1"
GRACE_S = 1.0   # on stop, how long open responses (a running watch, a client's event stream) may take to end


def parse_listen(value: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPV6]:PORT` -> (host, port); the host defaults to loopback."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, value
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise FlightError("usage", f"--http {value}: write an IPv6 address in brackets, e.g. --http [::1]:8765")
    if not host:
        host = DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise FlightError("usage", f"--http {value}: the port must be a number from 0 to 65535 "
                                   "(e.g. --http 8765 or --http 127.0.0.1:8765)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False   # a name: it may resolve to anything, so it needs an explicit token


def url_of(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}{MCP_PATH}"


class BearerAuth:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>`, else 401 (JSON)."""

    def __init__(self, app, token):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        problem = self.problem(dict(scope.get("headers") or ()).get(b"authorization"))
        if problem is None:
            return await self.app(scope, receive, send)
        if scope["type"] != "http":   # a websocket: nothing of ours is served there
            await send({"type": "websocket.close", "code": 1008})
            return
        error, description = problem
        body = json.dumps({"error": error, "error_description": description}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", f'Bearer realm="flight-mcp", error="{error}"'.encode())]})
        await send({"type": "http.response.body", "body": body})

    def problem(self, header: bytes | None) -> tuple[str, str] | None:
        """None when the header carries our token, else (OAuth error code, description)."""
        if header is None:
            return "invalid_request", "this server requires the header 'Authorization: Bearer <token>'"
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return "invalid_request", "the Authorization header must be 'Bearer <token>'"
        if not self.token.matches(presented.strip()):
            return "invalid_token", "the bearer token is not this server's token"
        return None


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise FlightError("usage", f"--http: cannot resolve {host!r}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)   # now: a client told the address below may connect before uvicorn accepts
    except OSError as e:
        sock.close()
        raise FlightError("http_bind_failed", f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


class _QuietGraceEnd(logging.Filter):
    """Our stop cancels what still runs after GRACE_S on purpose (the stop message says so)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "timeout graceful shutdown exceeded" not in record.getMessage()


def serve_http(listen: str, *, allow_mutating: bool = False, token_file: str | None = None,
               tls_cert: str | None = None, tls_key: str | None = None) -> int:
    host, port = parse_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise FlightError("usage", "give both --tls-cert and --tls-key (the certificate chain and its private key)")
    from . import tokens
    if not is_loopback(host) and not (token_file or os.environ.get(tokens.ENV)):   # before generating one
        raise FlightError("usage", f"refusing to serve on {host}, which is not a loopback address, without a token "
                                   f"you gave: give the token the clients will use with "
                                   f"--token-file FILE (mode 0600) or the {tokens.ENV} environment variable, "
                                   f"or serve on loopback (--http 127.0.0.1:{port}) behind an SSH tunnel or "
                                   "kubectl port-forward")
    token = tokens.resolve(token_file)

    stop = {"asked": False, "server": None}

    def on_signal(signum, frame):   # before uvicorn takes over, and after it hands the signal back to us
        stop["asked"] = True
        if stop["server"] is not None:
            stop["server"].should_exit = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    sock = _bind(host, port)
    try:
        import anyio
        import uvicorn

        from .server import serving
        with serving(allow_mutating) as mcp:
            app = BearerAuth(mcp.streamable_http_app(streamable_http_path=MCP_PATH, host=host), token)
            config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=GRACE_S, ssl_certfile=tls_cert, ssl_keyfile=tls_key)
            try:
                config.load()
            except (OSError, ValueError) as e:   # ssl.SSLError is an OSError
                raise FlightError("usage", f"cannot use --tls-cert {tls_cert} / --tls-key {tls_key}: {e}") from None
            logging.getLogger("uvicorn.error").addFilter(_QuietGraceEnd())
            server = uvicorn.Server(config)
            stop["server"] = server
            server.should_exit = stop["asked"]
            bound_host, bound_port = sock.getsockname()[:2]
            mode = "mutating tools ENABLED" if allow_mutating else "read-only"
            how = ("generated now, mode 0600" if token.created else "environment variable" if
                   token.source.startswith("$") else "file")
            print(f"flight-mcp: MCP over streamable HTTP at {url_of(bound_host, bound_port, bool(tls_cert))} "
                  f"({mode})\nflight-mcp: bearer token: {token.source} ({how}); clients send "
                  "'Authorization: Bearer <token>'", file=sys.stderr, flush=True)
            anyio.run(lambda: server.serve(sockets=[sock]))
        print("flight-mcp: stopped: open calls cancelled, every instrumentation removed", file=sys.stderr, flush=True)
    finally:
        sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
