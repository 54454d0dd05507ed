"""Unix-socket listener of the agent: newline-delimited JSON, one thread per connection.

Protocol (both directions one JSON object per line):
  -> {"id": 7, "cmd": "stack", "args": {...}}
  <- {"id": 7, "event": {...}}            zero or more, for streaming commands
  <- {"id": 7, "result": {...}}           exactly one final message ...
  <- {"id": 7, "error": {"kind": "...", "message": "..."}}   ... or this
  -> {"cancel": 7}                         ends command 7 early (it still sends its final message)
A long command (a capture) may send {"id": 7, "beat": 1} while it has nothing else to say: the host
knows its command thread runs, and reads the process from outside when beats stop (the GIL is held).
A request may carry "sent" (the host's time.monotonic(): CLOCK_MONOTONIC, one clock for every process of
the machine) and "slow_s". Then the agent answers {"id": 7, "started": {"queued_s": ...}} as soon as
Python code runs for it: how long the request waited before that, which is the time it waited for
the GIL (a thread in a long C call holds it); with "threads": {native_id: threading name} when that
wait reached slow_s, so the host can name the thread it saw holding the GIL from outside (and for
`info`, asked once per connection, so the host knows the names before any stall). The final
message then carries "replied" (time.monotonic() just before it was written): the host adds the
time it took to arrive, which a GIL held after the command ended also delays.
Every command runs on its own thread so that a long watch never blocks a cancel or a stack: the
thread that read the request runs it, after starting a fresh thread that takes over the reading
(the answer then waits for no thread to start; see Connection.serve).
When the connection closes, every command it started is cancelled, which removes its
instrumentation.
Nothing the agent must do on time waits on the client: progress events are dropped while the
client does not read (the socket is full), and a final message waits at most REPLY_WAIT_S, after
which the connection is given up (see Connection.send). Commands remove their instrumentation
before they answer, so a stopped client never keeps it alive.
"""
import _socket
import _thread
import os
import sys
import time

from . import native
from .registry import COMMANDS, AgentError

# Idents of the agent's own threads: left out of stack output and never traced.
AGENT_THREADS = set()
# Kernel thread ids of the agent's threads that have ended, newest last (at most ENDED_KEPT): a
# measurement read from /proc (gilstat's waiters) can still meet one after it is gone, and must
# not report it as a thread of the application (the kernel reuses an id only after pid_max others).
ENDED_TIDS = []
ENDED_KEPT = 256

_state = {"listener": None, "path": None, "connections": set(), "version": None, "build": None}
# Set by the package's start(): loads the module of a command not registered yet (by name).
command_loader = [None]
_state_lock = _thread.allocate_lock()

# How long a final message waits for a client that does not read (stopped with Ctrl-Z, or stuck)
# before the connection is given up: its commands have already cleaned up by then.
REPLY_WAIT_S = 30.0


# The stack of every agent thread, whatever the target set with threading.stack_size() (the payload
# gives the first one the same): recursion in views and expressions is bounded to fit it.
STACK_BYTES = 16 << 20


def loads(text):
    """json.loads of one request line (JSON text with surrounding white space)."""
    return _json()[0](text)


def dumps(obj):
    """json.dumps(obj, default=repr, ensure_ascii=False)."""
    return _json()[1](obj)


_codec = []


def _json():
    """(loads, dumps). The json module costs a bare target ~15 ms of imports (re, its regexes, enum) on
    the first command's path; its C accelerator alone does the same work: the scanner and encoder that
    json.loads and json.dumps(default=repr, ensure_ascii=False) use (same arguments on 3.8 to 3.14).
    Without the accelerator, the json module itself."""
    if not _codec:
        try:
            _codec.append(_c_json())
        except Exception:
            import json
            _codec.append((json.loads, lambda obj: json.dumps(obj, default=repr, ensure_ascii=False)))
    return _codec[0]


class _ScanContext(object):
    # what json.decoder.JSONDecoder gives its scanner by default
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self):
        self.parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def _c_json():
    import _json
    scan = _json.make_scanner(_ScanContext())
    make_encoder, encode_str = _json.make_encoder, _json.encode_basestring

    def c_loads(text):
        text = text.strip(" \t\n\r")
        try:
            obj, end = scan(text, 0)
        except StopIteration:
            raise ValueError("no JSON value")
        if end != len(text):
            raise ValueError("extra data after the JSON value")
        return obj

    def c_dumps(obj):
        # a new encoder per message, as json.dumps makes: its `markers` (cycle check) start empty
        return "".join(make_encoder({}, repr, encode_str, None, ": ", ", ", False, False, True)(obj, 0))

    c_dumps({"check": [1, 2.5, None, True, "\u00e9"]})   # an accelerator that differs fails here, not later
    return c_loads, c_dumps


def start_thread(fn, *args):
    """Starts an agent thread without the threading module (see package docstring), with a stack of
    STACK_BYTES. Never through _thread.stack_size(): set and restored around a start, the target
    would see our size, and a thread it starts meanwhile would get it (the GIL can change hands
    between any two bytecodes)."""
    def run():
        ident = _thread.get_ident()
        AGENT_THREADS.add(ident)
        try:
            fn(*args)
        except BaseException:
            pass
        finally:
            AGENT_THREADS.discard(ident)
            ENDED_TIDS.append(_thread.get_native_id())
            del ENDED_TIDS[:-ENDED_KEPT]
    module = native.extension()[0]
    if module is not None:
        return module.start_thread(run, STACK_BYTES)
    return _ctypes_start(run)


_ctypes_starter = []


def _ctypes_start(run):
    """pthread_create through ctypes, when our C extension cannot be used (free-threaded or debug
    builds): a ctypes callback takes the GIL on its foreign thread the way the extension does.
    Without ctypes either, the thread gets the target's stack size (only a bare embedding lacks it)."""
    if not _ctypes_starter:
        try:
            _ctypes_starter.append(_make_ctypes_starter())
        except Exception:
            _ctypes_starter.append(None)
    if _ctypes_starter[0] is None:
        return _thread.start_new_thread(run, ())
    return _ctypes_starter[0](run)


def _make_ctypes_starter():
    import ctypes
    import itertools
    libc = ctypes.CDLL(None)
    pending = {}
    keys = itertools.count(1)   # 0 would arrive as None

    def entry(key):
        fn = pending.pop(key, None)
        if fn is not None:
            fn()

    # One callback for every thread, kept for ever: a thread still returns through it after fn().
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(entry)

    def start(run):
        attr = ctypes.create_string_buffer(256)   # >= sizeof(pthread_attr_t) on every Linux ABI
        ident = ctypes.c_ulong()
        if libc.pthread_attr_init(attr) != 0:
            raise OSError("pthread_attr_init failed")
        try:
            key = next(keys)
            pending[key] = run
            err = libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(STACK_BYTES)) or \
                libc.pthread_attr_setdetachstate(attr, 1) or \
                libc.pthread_create(ctypes.byref(ident), attr, callback, ctypes.c_void_p(key))
            if err:
                pending.pop(key, None)
                raise OSError(err, "cannot start an agent thread: %s" % os.strerror(err))
        finally:
            libc.pthread_attr_destroy(attr)
        return ident.value
    return start


def ensure_listening(path, allowed_uid, version):
    with _state_lock:
        if _state["listener"] is not None and _state["path"] == path and os.path.exists(path):
            return "running"
        _state["version"] = version
        # Bind and listen under a temporary name, then rename: a client that sees the path must
        # never find a bound socket that is not listening yet (it would take it for a stale one).
        tmp = "%s.%d.tmp" % (path, os.getpid())
        if os.path.exists(tmp):
            os.unlink(tmp)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(None)  # blocking, whatever the target's socket.setdefaulttimeout()
        old_umask = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old_umask)
        sock.listen(8)
        os.rename(tmp, path)
        _state["listener"] = sock
        _state["path"] = path
    start_thread(_accept_loop, sock, allowed_uid)
    return "started"


def shutdown():
    """Stops listening, cancels every command of every connection (removing instrumentation)."""
    with _state_lock:
        sock, path = _state["listener"], _state["path"]
        _state["listener"] = None
        conns = list(_state["connections"])
    for conn in conns:
        conn.close()
    if sock is not None:
        try:
            # close() alone leaves the accept thread blocked in accept() on the old file, and the
            # next listener may get the same fd number; shutdown() wakes that thread up.
            sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def forget_in_child():
    """In a child forked by the target: the listener, connections and agent threads belong to the
    parent. Closes the child's copies of their sockets (close only: shutdown() would end the
    parent's connections too, and the socket file stays the parent's), marks their commands
    cancelled, and returns those commands. Never waits: a lock may be held by a thread that did
    not survive the fork, so locks are made afresh."""
    global _state_lock
    _state_lock = _thread.allocate_lock()
    listener, conns = _state["listener"], list(_state["connections"])
    _state.update(listener=None, path=None, connections=set())
    AGENT_THREADS.intersection_update([_thread.get_ident()])
    ctxs = []
    for sock in [listener] + [c.sock for c in conns]:
        try:
            if sock is not None:
                sock.close()
        except OSError:
            pass
    for conn in conns:
        conn.closed = True
        conn.send_lock = _thread.allocate_lock()
        for ctx in list(conn.running.values()):
            ctx.cancelled = True
            ctxs.append(ctx)
    return ctxs


def _peer_uid(sock):
    # struct ucred {pid_t pid; uid_t uid; gid_t gid;}: three native 32-bit ints (read without struct,
    # one C extension less to load at the first connection)
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(creds[4:8], sys.byteorder)


def _accept_loop(sock, allowed_uid):
    while True:
        try:
            fd = sock._accept()[0]
        except OSError:
            return  # listener closed by shutdown()
        client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        client.settimeout(None)
        try:
            uid = _peer_uid(client)
        except OSError:
            uid = -1
        if uid not in (0, allowed_uid, os.getuid()):
            client.close()
            continue
        conn = Connection(client)
        with _state_lock:
            _state["connections"].add(conn)
        start_thread(conn.serve)


class CommandContext(object):
    """What a running command sees: its args, a way to stream events, and its cancel flag."""

    def __init__(self, conn, req_id, args):
        self.conn = conn
        self.id = req_id
        self.args = args
        self.cancelled = False
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self.cleanups = []
        self.after_reply = []
        # the host measures GIL waits: {"queued_s", maybe "threads"} (see the module's docstring)
        self.started = None
        # the request's slow_s: a long command reports waits of its own thread this long (capture.GilGaps)
        self.slow_s = None
        self.woken_at = None   # monotonic time of the last wakeup() (capture.GilGaps)

    def emit(self, event):
        """Streams a progress event; never waits: dropped while the client does not read."""
        return self.conn.send({"id": self.id, "event": event}, wait_s=0)

    def beat(self):
        """Tells the host the command thread runs (a long command with nothing to report): the host
        reads the process from outside when beats stop coming. Never waits, like emit."""
        return self.conn.send({"id": self.id, "beat": 1}, wait_s=0)

    def cancel(self):
        self.cancelled = True
        self.wakeup()

    def wakeup(self):
        self.woken_at = time.monotonic()
        try:
            self._wake.release()
        except RuntimeError:
            pass  # already awake

    def sleep(self, timeout):
        """Blocks until wakeup(), cancel() or timeout; returns True when woken."""
        if timeout <= 0:
            return self._wake.acquire(False)
        return self._wake.acquire(True, timeout)

    def on_end(self, fn):
        """Registers a cleanup that runs however the command ends."""
        self.cleanups.append(fn)


class Connection(object):
    def __init__(self, sock):
        self.sock = sock
        self.send_lock = _thread.allocate_lock()
        self.running = {}
        self.closed = False
        self._unsent = b""   # the tail of a message the socket did not take yet

    def send(self, msg, wait_s=None, lock_s=0):
        """Writes one message. wait_s=0 (progress events): never waits; the message is dropped when
        the client is not reading (socket full) or another thread is writing. Otherwise it waits at
        most wait_s (default REPLY_WAIT_S) for the client to read, then gives the connection up.
        lock_s: with wait_s=0, how long to wait for another thread's write to end (default: not at all).
        Returns whether the message was handed to the socket whole."""
        if wait_s is None:
            wait_s = REPLY_WAIT_S
        data = (dumps(msg) + "\n").encode("utf-8", "replace")
        lock = self.send_lock
        if not (lock.acquire(True, wait_s or lock_s) if wait_s > 0 or lock_s > 0 else lock.acquire(False)):
            return False
        try:
            if self.closed:
                return False
            if wait_s <= 0:
                # A message partly written before must be finished first; never start one we
                # could not finish without waiting.
                if self._unsent and not self._write(0):
                    return False
                self._unsent = data
                self._write(0)  # whatever the socket did not take goes out before the next message
                return True
            self._unsent += data
            if not self._write(wait_s):
                self._give_up()
                return False
            return True
        finally:
            lock.release()

    def _write(self, wait_s):
        """Writes self._unsent within wait_s seconds; True when all of it went. Under send_lock."""
        deadline = time.monotonic() + wait_s
        while self._unsent:
            try:
                n = self.sock.send(self._unsent, _socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.closed = True
                self._unsent = b""
                return False
            self._unsent = self._unsent[n:]
            if not self._unsent:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            import select   # only when a client does not read: not on every agent's start
            try:
                select.select([], [self.sock], [], min(left, 0.5))
            except (OSError, ValueError):
                self.closed = True
                return False
        return True

    def _give_up(self):
        """The client did not read for REPLY_WAIT_S: end the connection. shutdown() wakes the reading
        thread, which closes it (cancelling its commands); closing here, under send_lock, could not."""
        self.closed = True
        self._unsent = b""
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def serve(self, buf=b"", begun=None):
        # A command runs on this (reading) thread once a new thread reads on: waking a thread
        # started for the command cost a scheduler hand-off on every warm call (up to ~1 ms on a
        # busy machine), while starting the next reader overlaps the command instead.
        # begun: the command the previous reader runs now. Its ack is sent here, by the new reader,
        # and only if it still runs: the command never waits for it, and a command done by now
        # costs no message at all (its answer says when it started); an ack sent before the command
        # cost a GIL hand-off, ~5 ms in a process whose other threads keep the GIL busy.
        if begun is not None and begun.started is not None and begun.id in self.running:
            # never waiting for a client that does not read (this thread reads the cancels), but for
            # the send lock a moment: the previous answer's thread may hold it still
            self.send({"id": begun.id, "started": begun.started}, wait_s=0, lock_s=1.0)
        handed_over = False
        try:
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    job = self._handle(line) if line.strip() else None
                    if job is not None:
                        start_thread(self.serve, buf, job[1])
                        handed_over = True
                        self._run(*job)
                        return
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
        finally:
            if not handed_over:  # only the reader that saw the end closes the connection
                self.close()

    def _handle(self, line):
        """Handles a cancel or a malformed line here; returns (name, ctx) of a command to run."""
        try:
            msg = loads(line.decode("utf-8"))
        except ValueError:
            self.send({"id": None, "error": {"kind": "protocol", "message": "request is not JSON"}})
            return
        if "cancel" in msg:
            ctx = self.running.get(msg["cancel"])
            if ctx is not None:
                ctx.cancel()
            return
        ctx = CommandContext(self, msg.get("id"), msg.get("args") or {})
        self.running[ctx.id] = ctx  # before the next reader starts: a cancel must find it
        sent = msg.get("sent")
        if type(sent) is float:  # a host that measures GIL waits (see the module's docstring)
            queued = max(time.monotonic() - sent, 0.0)
            ctx.started = {"queued_s": round(queued, 4)}
            slow = msg.get("slow_s")
            if type(slow) in (int, float):
                ctx.slow_s = slow
            if (type(slow) in (int, float) and queued >= slow) or msg.get("cmd") == "info":
                ctx.started["threads"] = thread_names()
        return msg.get("cmd"), ctx

    def _run(self, name, ctx):
        try:
            handler = COMMANDS.get(name)
            if handler is None and command_loader[0] is not None and isinstance(name, str):
                command_loader[0](name)
                handler = COMMANDS.get(name)
            if handler is None:
                raise AgentError("unknown_command", "the agent has no command %r" % (name,))
            result = handler(ctx.args, ctx)
            reply = {"id": ctx.id, "result": result}
        except AgentError as e:
            reply = {"id": ctx.id, "error": e.fact()}
        except BaseException as e:  # a bug of ours must not reach the target
            reply = {"id": ctx.id, "error": {"kind": "agent_bug",
                                              "message": "%s: %s" % (type(e).__name__, e)}}
        finally:
            for fn in reversed(ctx.cleanups):
                try:
                    fn()
                except BaseException:
                    pass
            self.running.pop(ctx.id, None)
        if ctx.started is not None:
            reply["started"], reply["replied"] = ctx.started, time.monotonic()
        self.send(reply)
        for fn in ctx.after_reply:
            fn()

    def close(self):
        # Not under send_lock: a thread may hold it for up to REPLY_WAIT_S writing to a client
        # that does not read; shutdown() makes its write fail at once.
        self.closed = True
        for ctx in list(self.running.values()):
            ctx.cancel()
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with _state_lock:
            _state["connections"].discard(self)


def thread_names():
    """{str(native_id): name} of the target's threads known to threading (read from each Thread's own
    fields, never its properties; none when the target never imported threading)."""
    from . import capture, objstate
    threading = sys.modules.get("threading")
    active = getattr(threading, "_active", None) if threading is not None else None
    out = {}
    if type(active) is not dict:
        return out
    reader = objstate.Reader()
    for ident, t in list(dict.items(active)):
        if ident in AGENT_THREADS:
            continue
        d = reader.instance_dict(t)
        native_id = objstate.dict_get(d, "_native_id") if d is not None else None
        if type(native_id) is int:
            out[str(native_id)] = capture.thread_facts(ident, t)[0]
    return out


def now_ms():
    return time.time() * 1000.0
