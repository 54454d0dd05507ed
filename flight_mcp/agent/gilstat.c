/* gilstat's sampler: a native thread of ours that reads the GIL's own state, never taking it.
 *
 * Every period it reads the interpreter's `struct _gil_runtime_state` (locked, last_holder,
 * switch_number) and, for each thread of the process, /proc/self/task/TID/syscall: a thread
 * blocked in futex() on the GIL's condition variable or mutex is waiting to take the GIL. So the
 * sampler tells waiting for the GIL from idle (blocked on anything else) and from running without
 * it, and it costs the target no GIL acquisition: it holds no Python object and calls no Python
 * API. Holds are attributed by thread state (last_holder), waits by native thread id; the agent
 * maps both to threads with the GIL held (threads()). A hold that passes the threshold while it
 * lasts is handed to the command's thread (wait()), which reads the holder's stack as soon as it
 * gets the GIL, i.e. where the holder let it go.
 *
 * One build serves 3.8-3.13: the stable ABI plus the offsets below (measured with offsetof on
 * each version's internal headers, LP64), checked against the running interpreter by check()
 * before anything runs: the GIL must read as locked by the caller's thread state, with the
 * interpreter's switch interval, and the thread state's thread ids must be the caller's. */
#include "ext_common.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int minor;
    long runtime_gil;  /* 3.8-3.11: offset of ceval.gil (embedded) in _PyRuntimeState, else -1 */
    long interp_gil;   /* 3.12+: offset of ceval.gil (a pointer) in PyInterpreterState, else -1 */
    long own_gil;      /* 3.12+: offset of _gil in PyInterpreterState, where the main interpreter's GIL is */
    long thread_id;    /* PyThreadState.thread_id */
    long native_id;    /* PyThreadState.native_thread_id (3.11+), else -1 */
} Layout;

static const Layout LAYOUTS[] = {
    {8, 1152, -1, -1, 176, -1},
    {9, 352, -1, -1, 176, -1},
    {10, 352, -1, -1, 176, -1},
    {11, 360, -1, -1, 152, 160},
    {12, -1, 384, 1040, 136, 144},
    {13, -1, 16, 7752, 152, 160},
};
/* struct _gil_runtime_state, the same on every version: interval, last_holder, locked,
 * switch_number, then cond, mutex (where takers wait), switch_cond, switch_mutex. */
#define G_INTERVAL 0
#define G_HOLDER 8
#define G_LOCKED 16
#define G_SWITCH 24
#define G_COND 32
#define G_TAKE_END (G_COND + sizeof(pthread_cond_t) + sizeof(pthread_mutex_t))
#define READS_PER_S 10000LL  /* /proc reads per second for waits, at most (~4% of a core, measured) */

static const Layout *L;
static char *gil;
static void *(*interp_main)(void);
static void *(*thread_head)(void *);
static void *(*thread_next)(void *);

typedef struct {
    uintptr_t key;     /* thread state (holders) or native tid (waiters) */
    int fd;            /* waiters: /proc/self/task/TID/syscall, -1 when gone */
    long samples;
    long runs;         /* holds/waits that passed the threshold */
    long long max_ns;  /* longest hold/wait seen, any length */
    long long run_start;
    int in_run;
    int run_event;     /* index of the run's event, -1 */
} Slot;

typedef struct {
    int kind;          /* 0 hold, 1 wait */
    uintptr_t key;
    long long start_ns, dur_ns;
    int ongoing;
} Event;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running, joined, stop, done;
    long gen;  /* which measurement: stop(gen)/result(gen) touch only their own */
    long long period, hold_ns, take_ns, end_ns;
    int max_threads, max_events, stacks_left;
    long *exclude; int nexclude;
    Slot *holders, *waiters; int nholders, nwaiters;
    long untracked;
    Event *events; int nevents; long events_total;
    long samples, locked_samples, wait_scans;
    int wait_every;
    long long started, last_ts;
    unsigned long switch0, switch1;
    int proc_ok;
    char *gil;  /* the sampler's own copy: check() may run meanwhile */
    /* a stack request: the hold event and its holder */
    int req; int req_event; uintptr_t req_key;
    /* the hold being followed */
    uintptr_t run_holder; unsigned long run_switch; long long run_first, run_prev; int run_active, run_event;
} S = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static Slot *slot_of(Slot *table, int *n, uintptr_t key) {
    for (int i = 0; i < *n; i++)
        if (table[i].key == key)
            return &table[i];
    if (*n >= S.max_threads) {
        S.untracked++; /* a sample of a thread past the table: counted, not attributed */
        return NULL;
    }
    Slot *s = &table[(*n)++];
    memset(s, 0, sizeof(*s));
    s->key = key;
    s->fd = -1;
    s->run_event = -1;
    return s;
}

static int add_event(int kind, uintptr_t key, long long start) {
    S.events_total++;
    if (S.nevents >= S.max_events)
        return -1;
    Event *e = &S.events[S.nevents];
    e->kind = kind;
    e->key = key;
    e->start_ns = start;
    e->dur_ns = 0;
    e->ongoing = 1;
    return S.nevents++;
}

/* A run seen from first to last sample ends halfway to the sample that saw it over. */
static void close_run(Slot *s, long long last, long long now, long long threshold) {
    long long dur = last - s->run_start + (now - last) / 2;
    if (dur > s->max_ns)
        s->max_ns = dur;
    if (s->run_event >= 0) {
        S.events[s->run_event].dur_ns = dur;
        S.events[s->run_event].ongoing = now == last;
    } else if (dur >= threshold) {
        s->runs++;
        int i = add_event(0, s->key, s->run_start);
        if (i >= 0) {
            S.events[i].dur_ns = dur;
            S.events[i].ongoing = now == last;
        }
    }
    s->in_run = 0;
    s->run_event = -1;
}

static int excluded(long tid) {
    for (int i = 0; i < S.nexclude; i++)
        if (S.exclude[i] == tid)
            return 1;
    return 0;
}

static void scan_tasks(void) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return;
    struct dirent *de;
    long self = syscall(SYS_gettid);
    while ((de = readdir(d)) != NULL) {
        long tid = strtol(de->d_name, NULL, 10);
        if (tid <= 0 || tid == self || excluded(tid))
            continue;
        int known = 0;
        for (int i = 0; i < S.nwaiters; i++)
            if (S.waiters[i].key == (uintptr_t)tid)
                known = 1;
        if (known)
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%ld/syscall", tid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        Slot *s = slot_of(S.waiters, &S.nwaiters, (uintptr_t)tid);
        if (s == NULL)
            close(fd);
        else {
            s->fd = fd;
            S.proc_ok = 1;
        }
    }
    closedir(d);
}

/* 1 when the thread is blocked in futex() on the GIL's cond or mutex, 0 otherwise, -1 gone. */
static int waits_for_gil(Slot *s) {
    char buf[256];
    ssize_t n = pread(s->fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = buf;
    long nr = strtol(p, &p, 10);
    if (p == buf || nr != SYS_futex)
        return 0;
    uintptr_t addr = (uintptr_t)strtoull(p, NULL, 16);
    return addr >= (uintptr_t)S.gil + G_COND && addr < (uintptr_t)S.gil + G_TAKE_END;
}

static void sample(long long ts, long long prev) {
    int locked = __atomic_load_n((int *)(S.gil + G_LOCKED), __ATOMIC_RELAXED);
    uintptr_t holder = __atomic_load_n((uintptr_t *)(S.gil + G_HOLDER), __ATOMIC_RELAXED);
    unsigned long sw = __atomic_load_n((unsigned long *)(S.gil + G_SWITCH), __ATOMIC_RELAXED);
    S.samples++;
    /* the hold being followed: same holder, no switch in between */
    if (S.run_active && !(locked == 1 && holder == S.run_holder && sw == S.run_switch)) {
        Slot *h = slot_of(S.holders, &S.nholders, S.run_holder);
        if (h != NULL)
            close_run(h, S.run_prev, ts, S.hold_ns);
        S.run_active = 0;
    }
    if (locked == 1) {
        S.locked_samples++;
        Slot *h = slot_of(S.holders, &S.nholders, holder);
        if (h != NULL) {
            h->samples++;
            if (!S.run_active) {
                S.run_active = 1;
                S.run_holder = holder;
                S.run_switch = sw;
                h->in_run = 1;
                h->run_event = -1;
                h->run_start = ts - (prev ? (ts - prev) / 2 : 0);
            } else if (h->run_event < 0 && ts - h->run_start >= S.hold_ns) {
                h->runs++;
                h->run_event = add_event(0, holder, h->run_start);
                if (h->run_event >= 0 && S.stacks_left > 0 && !S.req) {
                    S.stacks_left--;
                    pthread_mutex_lock(&S.mu);
                    S.req = 1;
                    S.req_event = h->run_event;
                    S.req_key = holder;
                    pthread_cond_broadcast(&S.cv);
                    pthread_mutex_unlock(&S.mu);
                }
            }
            S.run_prev = ts;
        }
    }
}

/* Waits: one read of /proc/self/task/TID/syscall per thread, every `wait_every` samples. */
static void scan_waits(long long ts, long long prev) {
    S.wait_scans++;
    for (int i = 0; i < S.nwaiters; i++) {
        Slot *w = &S.waiters[i];
        if (w->fd < 0)
            continue;
        int waiting = waits_for_gil(w);
        if (waiting < 0) {
            close(w->fd);
            w->fd = -1;
        }
        if (waiting == 1) {
            w->samples++;
            if (!w->in_run) {
                w->in_run = 1;
                w->run_event = -1;
                w->run_start = ts - (prev ? (ts - prev) / 2 : 0);
            } else if (w->run_event < 0 && ts - w->run_start >= S.take_ns) {
                w->runs++;
                w->run_event = add_event(1, w->key, w->run_start);
            }
            w->max_ns = w->max_ns > ts - w->run_start ? w->max_ns : ts - w->run_start;
        } else if (w->in_run) {
            long long dur = prev - w->run_start + (ts - prev) / 2;
            if (dur > w->max_ns)
                w->max_ns = dur;
            if (w->run_event >= 0)
                S.events[w->run_event].dur_ns = dur, S.events[w->run_event].ongoing = 0;
            else if (dur >= S.take_ns) {
                w->runs++;
                int e = add_event(1, w->key, w->run_start);
                if (e >= 0)
                    S.events[e].dur_ns = dur, S.events[e].ongoing = 0;
            }
            w->in_run = 0;
        }
    }
}

static void *sampler(void *unused) {
    (void)unused;
    prctl(PR_SET_NAME, "flight-mcp-gil", 0, 0, 0); /* the agent's threads are named flight-mcp-* */
    long long next = now_ns(), prev = 0, prev_scan = 0, last_scan = 0;
    S.started = next;
    S.switch0 = __atomic_load_n((unsigned long *)(S.gil + G_SWITCH), __ATOMIC_RELAXED);
    for (;;) {
        long long ts = now_ns();
        if (__atomic_load_n(&S.stop, __ATOMIC_RELAXED) || ts >= S.end_ns)
            break;
        if (ts - last_scan >= 100000000LL) { /* new threads, every 100 ms */
            scan_tasks();
            last_scan = ts;
            /* the reads of waits cost ~2-4 us each: within READS_PER_S, however many threads */
            long long reads = (long long)S.nwaiters * (1000000000LL / S.period);
            S.wait_every = reads > READS_PER_S ? (int)((reads + READS_PER_S - 1) / READS_PER_S) : 1;
        }
        sample(ts, prev);
        if (S.samples % S.wait_every == 0) {
            scan_waits(ts, prev_scan);
            prev_scan = ts;
        }
        prev = ts;
        next += S.period;
        if (next < ts)
            next = ts + S.period; /* fell behind (a loaded machine): skip, never burst */
        struct timespec until = {next / 1000000000LL, next % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
            ;
    }
    long long ts = now_ns();
    /* runs still going at the end are reported as they stand, marked ongoing */
    if (S.run_active) {
        Slot *h = slot_of(S.holders, &S.nholders, S.run_holder);
        if (h != NULL)
            close_run(h, S.run_prev, S.run_prev, S.hold_ns);
        S.run_active = 0;
    }
    for (int i = 0; i < S.nwaiters; i++) {
        Slot *w = &S.waiters[i];
        if (w->in_run) {
            long long dur = prev_scan - w->run_start;
            if (w->run_event >= 0)
                S.events[w->run_event].dur_ns = dur;
            else if (dur >= S.take_ns) {
                w->runs++;
                int e = add_event(1, w->key, w->run_start);
                if (e >= 0)
                    S.events[e].dur_ns = dur;
            }
            w->in_run = 0;
        }
        if (w->fd >= 0) {
            close(w->fd);
            w->fd = -1;
        }
    }
    S.last_ts = ts;
    S.switch1 = __atomic_load_n((unsigned long *)(S.gil + G_SWITCH), __ATOMIC_RELAXED);
    pthread_mutex_lock(&S.mu);
    S.done = 1;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

/* check(minor, switch_interval_us) -> None, or why this interpreter cannot be measured. */
static PyObject *check(PyObject *self, PyObject *args) {
    int minor;
    unsigned long interval_us;
    if (!PyArg_ParseTuple(args, "ik", &minor, &interval_us))
        return NULL;
    L = NULL;
    for (size_t i = 0; i < sizeof LAYOUTS / sizeof LAYOUTS[0]; i++)
        if (LAYOUTS[i].minor == minor)
            L = &LAYOUTS[i];
    if (L == NULL)
        return PyUnicode_FromFormat("no GIL layout is known for Python 3.%d", minor);
    interp_main = (void *(*)(void))dlsym(RTLD_DEFAULT, "PyInterpreterState_Main");
    thread_head = (void *(*)(void *))dlsym(RTLD_DEFAULT, "PyInterpreterState_ThreadHead");
    thread_next = (void *(*)(void *))dlsym(RTLD_DEFAULT, "PyThreadState_Next");
    if (interp_main == NULL || thread_head == NULL || thread_next == NULL)
        return PyUnicode_FromString("the interpreter does not export PyInterpreterState_Main/ThreadHead/PyThreadState_Next");
    if (L->runtime_gil >= 0) {
        char *rt = (char *)dlsym(RTLD_DEFAULT, "_PyRuntime");
        if (rt == NULL)
            return PyUnicode_FromString("the interpreter does not export _PyRuntime");
        gil = rt + L->runtime_gil;
    } else {
        char *interp = (char *)interp_main();
        gil = *(char **)(interp + L->interp_gil);
        if (gil != interp + L->own_gil) { /* checked before it is ever read through */
            gil = NULL;
            return PyUnicode_FromFormat("the GIL of this Python 3.%d is not where its release's layout puts it "
                                        "(a custom build?)", minor);
        }
    }
    PyThreadState *ts = PyThreadState_Get();
    char *found = gil;
    gil = NULL; /* until every check passed: start() refuses without it */
    if (*(int *)(found + G_LOCKED) != 1 || *(void **)(found + G_HOLDER) != (void *)ts ||
        *(unsigned long *)(found + G_INTERVAL) != interval_us)
        return PyUnicode_FromFormat("the GIL of this Python 3.%d is not where its release's layout puts it "
                                    "(a custom build?)", minor);
    if (*(unsigned long *)((char *)ts + L->thread_id) != PyThread_get_thread_ident() ||
        (L->native_id >= 0 && *(unsigned long *)((char *)ts + L->native_id) != (unsigned long)syscall(SYS_gettid)))
        return PyUnicode_FromFormat("the thread state of this Python 3.%d is not laid out as its release's "
                                    "(a custom build?)", minor);
    gil = found;
    Py_RETURN_NONE;
}

static void release(void) {
    free(S.holders);
    free(S.waiters);
    free(S.events);
    free(S.exclude);
    S.holders = S.waiters = NULL;
    S.events = NULL;
    S.exclude = NULL;
}

/* start(duration_ns, period_ns, hold_ns, take_ns, max_threads, max_events, max_stacks, exclude_tids) -> its
 * generation, which stop() and result() take to act on this measurement only */
static PyObject *start(PyObject *self, PyObject *args) {
    long long duration, period, hold, take;
    int max_threads, max_events, max_stacks;
    PyObject *exclude;
    if (!PyArg_ParseTuple(args, "LLLLiiiO", &duration, &period, &hold, &take, &max_threads, &max_events,
                          &max_stacks, &exclude))
        return NULL;
    if (L == NULL || gil == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "check() first");
        return NULL;
    }
    if (S.running) {
        PyErr_SetString(PyExc_RuntimeError, "busy");
        return NULL;
    }
    Py_ssize_t nex = PySequence_Size(exclude);
    if (nex < 0)
        return NULL;
    release();
    S.exclude = calloc(nex + 1, sizeof(long));
    for (Py_ssize_t i = 0; i < nex; i++) {
        PyObject *o = PySequence_GetItem(exclude, i);
        S.exclude[i] = o ? PyLong_AsLong(o) : -1;
        Py_XDECREF(o);
    }
    PyErr_Clear();
    S.nexclude = (int)nex;
    S.holders = calloc(max_threads, sizeof(Slot));
    S.waiters = calloc(max_threads, sizeof(Slot));
    S.events = calloc(max_events > 0 ? max_events : 1, sizeof(Event));
    if (S.holders == NULL || S.waiters == NULL || S.events == NULL || S.exclude == NULL) {
        release();
        return PyErr_NoMemory();
    }
    S.nholders = S.nwaiters = S.nevents = 0;
    S.events_total = S.samples = S.locked_samples = S.untracked = S.wait_scans = 0;
    S.wait_every = 1;
    S.period = period;
    S.hold_ns = hold;
    S.take_ns = take;
    S.max_threads = max_threads;
    S.max_events = max_events;
    S.stacks_left = max_stacks;
    S.stop = S.done = S.req = S.run_active = S.proc_ok = 0;
    S.end_ns = now_ns() + duration;
    S.gil = gil;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int rc = pthread_create(&S.thread, &attr, sampler, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        release();
        PyErr_SetString(PyExc_RuntimeError, "pthread_create failed");
        return NULL;
    }
    S.running = 1;
    S.joined = 0;
    return PyLong_FromLong(++S.gen);
}

/* wait(timeout_s) -> (event, thread state) of a hold whose stack is wanted, "done", or None. */
static PyObject *wait_(PyObject *self, PyObject *args) {
    double timeout;
    if (!PyArg_ParseTuple(args, "d", &timeout))
        return NULL;
    if (!S.running || S.joined)
        return PyUnicode_FromString("done");
    int got_req = 0, done = 0, event = 0;
    uintptr_t key = 0;
    Py_BEGIN_ALLOW_THREADS
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long long ns = until.tv_nsec + (long long)(timeout * 1e9);
    until.tv_sec += ns / 1000000000LL;
    until.tv_nsec = ns % 1000000000LL;
    pthread_mutex_lock(&S.mu);
    while (!S.req && !S.done)
        if (pthread_cond_timedwait(&S.cv, &S.mu, &until) == ETIMEDOUT)
            break;
    if (S.req) {
        got_req = 1;
        event = S.req_event;
        key = S.req_key;
        S.req = 0;
    }
    done = S.done;
    pthread_mutex_unlock(&S.mu);
    Py_END_ALLOW_THREADS
    if (got_req)
        return Py_BuildValue("(iK)", event, (unsigned long long)key);
    if (done)
        return PyUnicode_FromString("done");
    Py_RETURN_NONE;
}

/* stop([gen]) -> whether a measurement (that one) was running: ends the sampler and waits for its thread. Any
 * thread may call it (gilstat off, a cancel, the owner's clean-up); the join happens once. */
static pthread_mutex_t join_mu = PTHREAD_MUTEX_INITIALIZER;

static PyObject *stop(PyObject *self, PyObject *args) {
    long gen = -1;
    if (!PyArg_ParseTuple(args, "|l", &gen))
        return NULL;
    int was = S.running && !S.joined && (gen < 0 || gen == S.gen);
    if (was) {
        pthread_mutex_lock(&S.mu);
        if (!S.done)
            __atomic_store_n(&S.stop, 1, __ATOMIC_RELAXED); /* stopped early (result's "stopped") */
        pthread_mutex_unlock(&S.mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&join_mu);
        if (!S.joined) {
            pthread_join(S.thread, NULL);
            S.joined = 1;
        }
        pthread_mutex_unlock(&join_mu);
        Py_END_ALLOW_THREADS
    }
    return PyBool_FromLong(was);
}

/* threads() -> [(thread state, thread ident, native id or -1)] of the main interpreter (GIL held). */
static PyObject *threads(PyObject *self, PyObject *unused) {
    if (L == NULL)
        return PyList_New(0);
    PyObject *out = PyList_New(0);
    for (char *ts = thread_head(interp_main()); ts != NULL && out != NULL; ts = thread_next(ts)) {
        long long native = L->native_id >= 0 ? (long long)*(unsigned long *)(ts + L->native_id) : -1;
        PyObject *t = Py_BuildValue("(KkL)", (unsigned long long)(uintptr_t)ts,
                                    *(unsigned long *)(ts + L->thread_id), native);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(t);
    }
    return out;
}

static PyObject *slots_list(Slot *table, int n) {
    PyObject *out = PyList_New(0);
    for (int i = 0; i < n && out != NULL; i++) {
        PyObject *t = Py_BuildValue("(KllL)", (unsigned long long)table[i].key, table[i].samples, table[i].runs,
                                    table[i].max_ns);
        if (t == NULL || PyList_Append(out, t) < 0)
            Py_CLEAR(out);
        Py_XDECREF(t);
    }
    return out;
}

/* result([gen]) after stop(): what the sampler counted (once; then its tables are freed). */
static PyObject *result(PyObject *self, PyObject *args) {
    long gen = -1;
    if (!PyArg_ParseTuple(args, "|l", &gen))
        return NULL;
    if (!S.running || !S.joined || S.holders == NULL || (gen >= 0 && gen != S.gen)) {
        PyErr_SetString(PyExc_RuntimeError, "no finished measurement");
        return NULL;
    }
    PyObject *events = PyList_New(0);
    for (int i = 0; i < S.nevents && events != NULL; i++) {
        Event *e = &S.events[i];
        PyObject *t = Py_BuildValue("(iKLLi)", e->kind, (unsigned long long)e->key, e->start_ns, e->dur_ns, e->ongoing);
        if (t == NULL || PyList_Append(events, t) < 0)
            Py_CLEAR(events);
        Py_XDECREF(t);
    }
    PyObject *r = Py_BuildValue("{s:l,s:l,s:l,s:L,s:L,s:k,s:N,s:N,s:N,s:l,s:l,s:i,s:i}",
                                "samples", S.samples, "locked_samples", S.locked_samples, "wait_scans", S.wait_scans,
                                "started_ns", S.started, "ended_ns", S.last_ts,
                                "switches", S.switch1 - S.switch0,
                                "holders", slots_list(S.holders, S.nholders),
                                "waiters", slots_list(S.waiters, S.nwaiters),
                                "events", events, "events_total", S.events_total,
                                "untracked", S.untracked, "proc_ok", S.proc_ok,
                                "stopped", S.stop);
    release();
    S.running = 0;
    return r;
}

static void atfork_child(void) {
    /* the sampler thread does not exist in a child: nothing runs, nothing is joined */
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.cv, NULL);
    S.running = 0;
    S.joined = 1;
    S.holders = S.waiters = NULL; /* the parent's, never freed here */
    S.events = NULL;
    S.exclude = NULL;
}

static PyMethodDef methods[] = {
    {"check", check, METH_VARARGS, NULL},
    {"start", start, METH_VARARGS, NULL},
    {"wait", wait_, METH_VARARGS, NULL},
    {"stop", stop, METH_VARARGS, NULL},
    {"threads", threads, METH_NOARGS, NULL},
    {"result", result, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_flight_mcp_gilstat", NULL, -1, methods};

PyMODINIT_FUNC PyInit__flight_mcp_gilstat(void) {
    static int forked;
    if (!forked) {
        pthread_atfork(NULL, NULL, atfork_child);
        forked = 1;
    }
    return PyModule_Create(&moduledef);
}
