"""Sampling a process's CPU from outside with py-spy, and reading what it wrote.

py-spy (PyPI `py-spy`, a static binary) reads the interpreter's thread and frame structures with
process_vm_readv; with --nonblocking it never stops the target. Each sample it marks every thread
active or idle (the OS thread state, plus a heuristic for known waits) and knows which thread
holds the GIL, but no output format carries those marks: a record run only filters on them
(--idle keeps idle threads, --gil keeps only the GIL holder). So three samplers run side by side
over the same interval, each writing its collapsed stacks ("raw" format, one `frame;frame count`
line per distinct stack, with --threads a first frame naming the thread):

- active: the CPU profile (py-spy's default view);
- all:    every thread, idle ones included (--idle): what active leaves out is idle;
- gil:    the thread holding the GIL at each sample (--gil; it reads one thread, the cheapest).

Their samples are taken at different instants, so the idle and GIL figures are estimates of the
same quantities from independent samples (exact counts only per sampler). bench/profile_overhead.py
measures what the three cost the target.

py-spy runs as a child process under the call's deadline, killed when the call is cancelled or
ends; nothing is ever loaded into the target.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable
from xml.sax.saxutils import escape as xml_escape

from .errors import FlightError

SAMPLERS = {"active": [], "all": ["--idle"], "gil": ["--gil"]}

# After the duration: py-spy's start (reading the binary's symbols) and writing its file.
START_GRACE_S = 8.0
# How long a sampler asked to stop (SIGINT: it then writes what it sampled) may take before it is killed.
STOP_GRACE_S = 2.0

_THREAD = re.compile(r"^thread \((?P<id>0x[0-9a-fA-F]+|\d+)\)(?:: (?P<name>.*))?$")


def find_pyspy() -> str:
    """py-spy next to the running Python (the venv flight-mcp is installed in), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("py-spy")
    if found:
        return found
    raise FlightError("profiler_unavailable", "profile samples the process with py-spy, which was found neither "
                      f"next to {sys.executable} nor on PATH: install it into flight-mcp's environment with "
                      f"`{sys.executable} -m pip install py-spy` (it is one of flight-mcp's dependencies).")


# ---------------------------------------------------------------- reading py-spy's raw output

@dataclass(frozen=True)
class FrameKey:
    """One frame as py-spy names it: function, file (shortened to its package part), line."""
    name: str
    file: str
    line: int | None

    @property
    def function(self) -> tuple[str, str]:
        return self.name, self.file


def parse_frame(text: str) -> FrameKey:
    """'name (file:line)', 'name (file)' or a bare name (py-spy's collapsed-stack frame)."""
    if text.endswith(")") and " (" in text:
        name, _, where = text[:-1].partition(" (")  # a function's name has no " (", a path may
        file, sep, line = where.rpartition(":")
        if sep and line.isdigit():
            return FrameKey(name, file, int(line))
        return FrameKey(name, where, None)
    return FrameKey(text, "", None)


@dataclass(frozen=True)
class ThreadKey:
    label: str  # as py-spy wrote it: "thread (TID): NAME"
    native_id: int | None  # the OS thread id (py-spy's decimal id, or found from the pthread_t)
    name: str | None
    pthread_id: int | None = None  # py-spy's hex id: it did not know the OS id (nor the OS thread state)


def parse_thread(text: str) -> ThreadKey | None:
    m = _THREAD.match(text)
    if m is None:
        return None
    tid = m.group("id")
    if tid.startswith("0x"):
        return ThreadKey(text, None, m.group("name"), int(tid, 16))
    return ThreadKey(text, int(tid), m.group("name"))


@dataclass
class Stack:
    thread: ThreadKey | None
    frames: tuple[FrameKey, ...]  # outermost first
    count: int
    line: str  # the collapsed stack as py-spy wrote it, without the count


def parse_raw(text: str) -> list[Stack]:
    """py-spy's raw (collapsed stacks) output; lines that do not end in a count are skipped."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = parse_thread(parts[0])
        frames = tuple(parse_frame(p) for p in (parts[1:] if thread else parts))
        out.append(Stack(thread, frames, int(count), stack))
    return out


@dataclass
class FunctionCount:
    name: str
    file: str
    line: int | None  # its line seen in the most samples (where it works, or calls what does)
    self_samples: int = 0
    total_samples: int = 0


def functions(stacks: list[Stack]) -> list[FunctionCount]:
    """Per function (name, file): samples with it on top (self) and anywhere in the stack (total;
    once per sample however deep it recurses), most self first."""
    self_c: Counter = Counter()
    total_c: Counter = Counter()
    lines: dict[tuple[str, str], Counter] = {}
    for s in stacks:
        if not s.frames:
            continue
        self_c[s.frames[-1].function] += s.count
        for f in s.frames:
            lines.setdefault(f.function, Counter())[f.line] += s.count
        for fn in {f.function for f in s.frames}:
            total_c[fn] += s.count
    out = [FunctionCount(fn[0], fn[1], lines[fn].most_common(1)[0][0], self_c[fn], total)
           for fn, total in total_c.items()]
    out.sort(key=lambda f: (-f.self_samples, -f.total_samples, f.name, f.file))
    return out


def thread_key(thread: ThreadKey | None) -> int | str:
    """One thread across samplers: its OS id, else py-spy's label."""
    if thread is None:
        return ""
    return thread.native_id if thread.native_id is not None else thread.label


def by_thread(stacks: list[Stack]) -> dict[int | str, list[Stack]]:
    out: dict[int | str, list[Stack]] = {}
    for s in stacks:
        out.setdefault(thread_key(s.thread), []).append(s)
    return out


def samples(stacks: list[Stack]) -> int:
    return sum(s.count for s in stacks)


# ---------------------------------------------------------------- what the kernel knows of each thread

def thread_cpu(pid: int) -> dict[int, float]:
    """OS thread id -> CPU seconds it used so far (user + system, the kernel's own accounting)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def native_ids(pid: int, pthread_ids: list[int]) -> dict[int, int]:
    """pthread_t -> OS thread id, for threads py-spy names by their pthread_t (Python <= 3.10 in
    --nonblocking mode: py-spy needs a ptrace stop to find OS ids there).

    A pthread_t is the address of the thread's descriptor in the target, which holds its OS id at
    one offset, the same for every thread of a libc (glibc x86_64: 0x2d0). Found by reading the
    descriptors through /proc/PID/mem (no stop; the access py-spy already has) and keeping the offset
    where every descriptor holds one of the process's thread ids, each a different one."""
    try:
        tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
        blobs = {}
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for ptid in pthread_ids:
                mem.seek(ptid)
                blobs[ptid] = mem.read(0x800)
    except (OSError, ValueError, OverflowError):
        return {}
    if not blobs or any(len(b) < 0x800 for b in blobs.values()):
        return {}
    for off in (0x2d0, *range(0, 0x800, 4)):
        found = {ptid: int.from_bytes(b[off:off + 4], sys.byteorder, signed=True) for ptid, b in blobs.items()}
        if all(t in tids for t in found.values()) and len(set(found.values())) == len(found):
            return found
    return {}


# ---------------------------------------------------------------- running the samplers

@dataclass
class SamplerRun:
    kind: str
    stacks: list[Stack]
    errors: int = 0
    exited: bool = False  # py-spy saw the process exit
    late: bool = False  # py-spy fell behind its rate
    stopped: bool = False  # asked to stop early (cancel or deadline)


@dataclass
class Recording:
    runs: dict[str, SamplerRun]
    seconds: float  # wall time from start to the last sampler's end
    stopped: str | None = None  # "cancelled" or "deadline" when stopped before the duration
    cpu: dict[int, float] = field(default_factory=dict)  # OS thread id -> CPU seconds used while sampling
    cpu_window: float = 0.0  # the wall seconds those CPU seconds were measured over
    os_state: bool = True  # py-spy knew each thread's OS state (False: all its samples count as running)
    runnable: dict[int, float] = field(default_factory=dict)  # OS thread id -> share of our own state samples
    # in which it was running or runnable (taken when py-spy cannot: os_state False)


class StateSampler:
    """Each thread's OS state (/proc/PID/task/TID/stat), sampled at the profile's rate on a thread
    of ours: what py-spy uses to tell idle samples apart, for the Pythons where its --nonblocking
    mode cannot (3.10 and older). Reading /proc does not stop or enter the target."""

    def __init__(self, pid: int, rate: int):
        self.pid, self.period = pid, 1.0 / rate
        self.seen: Counter = Counter()
        self.running: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flight-mcp-profile-state-{pid}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return {tid: self.running[tid] / n for tid, n in self.seen.items() if n}

    def _run(self) -> None:
        task = f"/proc/{self.pid}/task"
        while not self._stop.wait(self.period):
            try:
                tids = os.listdir(task)
            except OSError:
                return  # the process is gone
            for tid in tids:
                try:
                    with open(f"{task}/{tid}/stat") as f:
                        state = f.read().rpartition(")")[2].split(None, 1)[0]
                except (OSError, IndexError):
                    continue
                self.seen[int(tid)] += 1
                self.running[int(tid)] += state == "R"


def identify_threads(pid: int, runs: dict[str, SamplerRun]) -> bool:
    """Gives threads py-spy named by pthread_t their OS id (in place). False when py-spy named any
    thread that way: it then did not know the OS thread state, so its idle marks are unreliable."""
    hex_ids = {s.thread.pthread_id for r in runs.values() for s in r.stacks
               if s.thread is not None and s.thread.pthread_id is not None}
    if not hex_ids:
        return True
    found = native_ids(pid, sorted(hex_ids))
    for r in runs.values():
        for s in r.stacks:
            if s.thread is not None and s.thread.pthread_id in found:
                tid = found[s.thread.pthread_id]
                label = f"thread ({tid})" + (f": {s.thread.name}" if s.thread.name is not None else "")
                s.line = label + s.line[len(s.thread.label):]
                s.thread = ThreadKey(label, tid, s.thread.name, s.thread.pthread_id)
    return False


def _stats(out: str) -> tuple[int, bool, bool]:
    m = re.search(r"Samples: \d+ Errors: (\d+)", out)
    return (int(m.group(1)) if m else 0, "process exited" in out, "behind in sampling" in out)


def _error_from(pid: int, stderr: str, rc: int) -> FlightError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    first = next((ln[len("Error:"):].strip() for ln in lines if ln.startswith("Error:")), None)
    cause = []
    if "Caused by:" in lines:
        cause = [re.sub(r"^\d+:\s*", "", ln) for ln in lines[lines.index("Caused by:") + 1:]
                 if not ln.startswith("Stack backtrace")][:1]
    said = "; ".join([first or (lines[-1] if lines else f"exit status {rc}")] + cause)
    low = stderr.lower()
    if "permission denied" in low or "operation not permitted" in low:
        return FlightError("permission_denied", f"py-spy may not read pid {pid} ({said}): run flight-mcp as the "
                           "target's user or as root; in a container add CAP_SYS_PTRACE; with Yama "
                           "ptrace_scope=1 a non-root reader may only read its own children.")
    if "no such file" in low or "check that the process is running" in low:
        return FlightError("no_such_process", f"pid {pid} exited before py-spy could read it ({said}).")
    if "failed to find python version" in low or "python interpreter" in low:
        return FlightError("not_python", f"py-spy found no CPython interpreter in pid {pid} ({said}).")
    return FlightError("external_failed", f"py-spy failed on pid {pid}: {said}. The target is unaffected.")


def record(pid: int, *, rate: int, duration: int, deadline_s: float, cancelled: Callable[[], bool],
           progress: Callable[[float, str], None] | None = None, kinds: tuple[str, ...] = tuple(SAMPLERS),
           pyspy: str | None = None, sample_states: bool = False) -> Recording:
    """Runs one py-spy record per kind in `kinds` side by side for `duration` seconds at `rate` Hz.

    Stopped early (SIGINT, so each writes what it sampled) when cancelled() turns true or the
    deadline comes; killed if it then does not end within STOP_GRACE_S. Raises FlightError with
    py-spy's reason when a sampler fails. sample_states: also sample each thread's OS state
    ourselves (StateSampler), for targets where py-spy cannot."""
    exe = pyspy or find_pyspy()
    work = tempfile.mkdtemp(prefix="flight-mcp-profile-")
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    procs: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    stop_reason = None
    states = None
    try:
        for kind in kinds:
            out = os.path.join(work, f"{kind}.txt")
            cmd = [exe, "record", "--pid", str(pid), "--nonblocking", "--threads", "--format", "raw",
                   "--rate", str(rate), "--duration", str(duration), "--output", out, *SAMPLERS[kind]]
            with open(os.path.join(work, f"{kind}.log"), "wb") as log, \
                    open(os.path.join(work, f"{kind}.err"), "wb") as err:
                # its own session: a Ctrl-C at the terminal is ours to handle, not the sampler's
                procs[kind] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=err, env=env,
                                               start_new_session=True)
        cpu_before, cpu_at = thread_cpu(pid), time.monotonic()
        if sample_states:
            states = StateSampler(pid, rate)
            states.start()
        last_report = started
        while any(p.poll() is None for p in procs.values()):
            now = time.monotonic()
            failed = next((k for k, p in procs.items() if p.returncode not in (None, 0)), None)
            if failed is not None and stop_reason is None:  # one failed: say why now, not after the duration
                raise _error_from(pid, _read(os.path.join(work, f"{failed}.err")), procs[failed].returncode)
            if stop_reason is None and (cancelled() or now - started >= deadline_s):
                stop_reason = "cancelled" if cancelled() else "deadline"
                for p in procs.values():
                    if p.poll() is None:
                        p.send_signal(signal.SIGINT)
                stop_at = now
            if stop_reason is not None and now - stop_at > STOP_GRACE_S:
                break
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                progress(min(now - started, duration), f"sampling pid {pid} at {rate} Hz: "
                         f"{min(now - started, duration):.0f}/{duration} s")
            time.sleep(0.05)
        cpu_after, cpu_end = thread_cpu(pid), time.monotonic()
        runnable = states.stop() if sample_states else {}
        seconds = time.monotonic() - started
        hung = [k for k, p in procs.items() if p.poll() is None]
        for k in hung:
            procs[k].kill()
            procs[k].wait()
        runs: dict[str, SamplerRun] = {}
        for kind, p in procs.items():
            path = os.path.join(work, f"{kind}.txt")
            log = _read(os.path.join(work, f"{kind}.log"))
            if kind in hung or not os.path.exists(path):
                if stop_reason == "cancelled":
                    raise FlightError("external_failed", f"profiling pid {pid} was cancelled before py-spy "
                                      "started sampling; nothing was recorded. The target is unaffected.")
                if kind in hung or stop_reason is not None:
                    raise FlightError("external_timeout", f"py-spy did not finish sampling pid {pid} within "
                                      f"{deadline_s:.1f}s and was stopped; call again with a larger timeout_s or "
                                      "a shorter duration.")
                raise _error_from(pid, _read(os.path.join(work, f"{kind}.err")), p.returncode)
            errors, exited, late = _stats(log)
            runs[kind] = SamplerRun(kind, parse_raw(_read(path)), errors, exited, late, stop_reason is not None)
        cpu = {tid: max(0.0, cpu_after[tid] - cpu_before.get(tid, 0.0)) for tid in cpu_after}
        os_state = identify_threads(pid, runs)
        return Recording(runs, seconds, stop_reason, cpu, cpu_end - cpu_at, os_state, runnable)
    finally:
        if states is not None:
            states.stop()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------- the flame graph

_W, _ROW, _PAD, _FONT = 1200, 17, 10, 12


class _Node:
    __slots__ = ("name", "count", "children")

    def __init__(self, name: str):
        self.name, self.count, self.children = name, 0, {}


def _color(name: str) -> str:
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    return f"rgb({205 + h % 50},{(h >> 8) % 190},{(h >> 16) % 55})"


def flamegraph_svg(stacks: list[Stack], title: str) -> str:
    """A flame graph of collapsed stacks (roots at the bottom, width = samples), as a self-contained
    SVG; each box's tooltip names the frame with its samples and share."""
    root = _Node("all")
    for s in stacks:
        root.count += s.count
        node = root
        for part in s.line.split(";"):
            node = node.children.setdefault(part, _Node(part))
            node.count += s.count
    depth = _depth(root)
    height = (depth + 1) * _ROW + 3 * _PAD + 2 * _FONT
    total = max(root.count, 1)
    scale = (_W - 2 * _PAD) / total
    out = [f'<?xml version="1.0" standalone="no"?>',
           f'<svg version="1.1" width="{_W}" height="{height}" viewBox="0 0 {_W} {height}" '
           f'xmlns="http://www.w3.org/2000/svg" font-family="monospace" font-size="{_FONT}">',
           f'<rect x="0" y="0" width="{_W}" height="{height}" fill="#f8f8f0"/>',
           f'<text x="{_W // 2}" y="{_PAD + _FONT}" text-anchor="middle" font-size="{_FONT + 3}">'
           f'{xml_escape(title)}</text>']

    def draw(node: _Node, x: float, level: int) -> None:
        for child in sorted(node.children.values(), key=lambda n: n.name):
            w = child.count * scale
            if w >= 0.3:
                y = height - _PAD - (level + 1) * _ROW
                tip = xml_escape(f"{child.name} ({child.count} samples, {100 * child.count / total:.2f}%)")
                out.append(f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW - 1}" '
                           f'fill="{_color(child.name)}" rx="2"/>')
                chars = int((w - 6) / (_FONT * 0.6))
                if chars >= 3:
                    label = child.name if len(child.name) <= chars else child.name[:chars - 2] + ".."
                    out.append(f'<text x="{x + 3:.1f}" y="{y + _ROW - 5}">{xml_escape(label)}</text>')
                out.append("</g>")
                draw(child, x, level + 1)
            x += w

    draw(root, _PAD, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _depth(node: _Node) -> int:
    todo, deepest = [(node, 0)], 0
    while todo:
        n, d = todo.pop()
        deepest = max(deepest, d)
        todo.extend((c, d + 1) for c in n.children.values())
    return deepest


def apportion(total: int, weights: list[float], caps: list[int]) -> list[int]:
    """total split in proportion to weights, each part at most its cap, summing to
    min(total, the caps of the parts with weight) exactly (the largest remainders get the odd ones)."""
    n = len(weights)
    parts = [0] * n
    left = min(total, sum(c for c, w in zip(caps, weights) if w > 0))
    while left > 0:
        open_ = [i for i in range(n) if parts[i] < caps[i] and weights[i] > 0]
        w = sum(weights[i] for i in open_)
        shares = {i: left * weights[i] / w for i in open_}
        capped = False
        for i in open_:
            add = int(shares[i])
            if add >= caps[i] - parts[i]:
                add, capped = caps[i] - parts[i], True
            parts[i] += add
            left -= add
        if capped:
            continue  # what the capped parts could not take goes round again
        for i in sorted(open_, key=lambda i: int(shares[i]) - shares[i])[:left]:
            parts[i] += 1
        left = 0
    return parts


def running_share(stacks: list[Stack], gil: list[Stack], budget: int) -> list[Stack]:
    """A thread's stacks cut down to `budget` running samples, for samples py-spy could not mark idle
    (no OS thread state): our own state sampler says how often the thread ran (budget); which stacks
    ran is taken first from those seen holding the GIL (Python code runs only with it), in proportion
    to that, and what is left of the budget is spread over the other stacks in proportion to their
    samples (work with the GIL released: hashing, compression, I/O)."""
    held = Counter()
    for s in gil:
        held[s.line] += s.count
    caps = [s.count for s in stacks]
    with_gil = apportion(budget, [min(held[s.line], s.count) for s in stacks], caps)
    rest = apportion(budget - sum(with_gil), [0 if held[s.line] else s.count for s in stacks], caps)
    return [Stack(s.thread, s.frames, a + b, s.line) for s, a, b in zip(stacks, with_gil, rest) if a + b]
