/* watch/trace's call hook on Python 3.8-3.11: a PEP 523 frame-evaluation function that runs the
 * probes around the frames of instrumented code objects, so the application never sees a frame of
 * ours (no trampoline in its frame chains, tracebacks, inspect.stack() or recursion depth).
 *
 * Why an evaluation function and not a per-function vectorcall wrapper: 3.11 inlines
 * Python-to-Python calls past the function's vectorcall slot (and re-versions functions for its
 * specialised calls), while it evaluates every frame through a custom evaluator and does not
 * specialise or inline calls while one is set; an evaluator also matches by code object, so nested
 * functions (new function objects per call) are covered, and it sees each resumption of a
 * generator or coroutine frame. Its cost: while installed, every Python frame of the process pays
 * one indirect call and a scan of the (few) instrumented code objects; on 3.11 calls also lose
 * their inlining. It is installed with the first site and removed with the last one, and it
 * chains to an evaluator that was there before (a debugger's).
 *
 * One build serves 3.8-3.11: the stable ABI plus the struct offsets of each version below, and the
 * few private functions looked up at load. The agent's instrument.py loads it and falls back to
 * its code trampoline when it cannot.
 *
 * The table it reads, set by set_sites(): (code, start, event, is_generator, slots, live) per site.
 *   start(*values) -> entered or None: values are the parameters read from the new frame.
 *   event(entered, what, value, offset): what 0 returned (value: the result; offset: the byte
 *     offset of the instruction it returned at, -1 unknown), 1 raised (the exception),
 *     2 suspended, 3 resumed. Errors of both are swallowed; a pending exception is kept intact.
 *   slots: for each parameter, its index among the frame's fast locals; ~index when it may
 *     already be a cell there (the cell's content is the value).
 *   live: {frame address: entered} for suspended generator frames a probe took.
 * set_raise_note(capsule): trace's recorder is told of every frame that ends by an exception
 * (raise_note(code), the exception still set), so a raised call in its tree gets the type that
 * profile functions are not given.
 */
#include "ext_common.h"

/* Offsets measured from each version's headers (offsetof on PyFrameObject / _PyInterpreterFrame,
 * PyInterpreterState, PyGenObject), x86-64 and aarch64 (LP64). */
typedef struct {
    int minor;
    size_t eval_frame;   /* PyInterpreterState.eval_frame (3.8 only: no setter function) */
    size_t localsplus;   /* first fast local in the frame */
    long lasti;          /* 3.8-3.10 PyFrameObject.f_lasti: -1 until the frame first runs */
    long stacktop;       /* 3.8/3.9 f_stacktop: non-NULL after a yield */
    long state;          /* 3.10 f_state (int8): -1 FRAME_SUSPENDED */
} Layout;

static const Layout LAYOUTS[] = {
    {8, 568, 360, 104, 72, -1},
    {9, 0, 360, 104, 72, -1},
    {10, 0, 352, 96, -1, 108},
    {11, 0, 72, -1, -1, -1},
};
#define F_CODE 32          /* f_code in PyFrameObject (3.8-3.10) and _PyInterpreterFrame (3.11) */
#define IF_PREV_INSTR 56   /* 3.11 _PyInterpreterFrame.prev_instr */
#define IF_OWNER 69        /* 3.11 _PyInterpreterFrame.owner: 1 FRAME_OWNED_BY_GENERATOR */
#define GEN_STATE_BEFORE_IFRAME 5 /* 3.11 PyGenObject: gi_frame_state (int8) sits 5 bytes before gi_iframe */
#define OP_RETURN_GENERATOR 75    /* 3.11: a generator frame first resumes right after it */
#define SUSPENDED (-1)            /* FRAME_SUSPENDED, 3.10 frames and 3.11 generators */
#define CODE_ADAPTIVE_311 184     /* 3.11 PyCodeObject.co_code_adaptive: the instructions */

static void (*raise_note)(PyObject *code); /* trace's recorder (set_raise_note), or NULL */

static const Layout *L;
static PyTypeObject *cell_type;

typedef PyObject *(*eval38_fn)(void *, int);
typedef PyObject *(*eval_fn)(PyThreadState *, void *, int);
static void *(*get_eval)(void *);
static void (*set_eval)(void *, void *);
static void *prev_eval;   /* the evaluator we chain to */
static int installed;

typedef struct {
    PyObject *code;  /* borrowed from entry (the tuple owns it) */
    PyObject *entry; /* owned: (code, start, event, is_generator, slots, live) */
    int gen;
    Py_ssize_t nslots;
    long *slots;
} Site;

static Site *sites;
static Py_ssize_t nsites;

static void *interp_now(void) {
    return *(void **)((char *)PyThreadState_Get() + 2 * sizeof(void *)); /* PyThreadState.interp */
}

static PyObject *call_prev(PyThreadState *ts, void *frame, int throwflag) {
    if (L->minor == 8)
        return ((eval38_fn)prev_eval)(frame, throwflag);
    return ((eval_fn)prev_eval)(ts, frame, throwflag);
}

static PyObject *read_values(const Site *s, void *frame) {
    PyObject **fast = (PyObject **)((char *)frame + L->localsplus);
    PyObject *values = PyTuple_New(s->nslots);
    if (values == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < s->nslots; i++) {
        long slot = s->slots[i];
        PyObject *v = fast[slot < 0 ? ~slot : slot];
        if (v != NULL && slot < 0 && Py_TYPE(v) == cell_type)
            v = *(PyObject **)((char *)v + sizeof(PyObject)); /* PyCellObject.ob_ref */
        if (v == NULL)
            v = Py_None;
        Py_INCREF(v);
        PyTuple_SetItem(values, i, v);
    }
    return values;
}

/* fn(*args), keeping any pending exception and dropping errors of fn. */
static PyObject *call_quiet(PyObject *fn, PyObject *args) {
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    PyObject *r = PyObject_Call(fn, args, NULL);
    if (r == NULL)
        PyErr_Clear();
    PyErr_Restore(et, ev, etb);
    return r;
}

static PyObject *WHAT[4]; /* the ints 0-3, made once */

static PyObject *MINUS_ONE;

static void send_event_at(PyObject *event, PyObject *entered, int what, PyObject *value, PyObject *offset) {
    PyObject *args = PyTuple_Pack(4, entered, WHAT[what], value ? value : Py_None, offset ? offset : MINUS_ONE);
    if (args == NULL) {
        PyErr_Clear();
        return;
    }
    Py_XDECREF(call_quiet(event, args));
    Py_DECREF(args);
}

static void send_event(PyObject *event, PyObject *entered, int what, PyObject *value) {
    send_event_at(event, entered, what, value, NULL);
}

/* The byte offset of the instruction an ended frame ran last (its return). */
static long last_offset(void *frame) {
    if (L->minor == 11) {
        char *prev = *(char **)((char *)frame + IF_PREV_INSTR);
        char *code = *(char **)((char *)frame + F_CODE);
        return prev != NULL ? (long)(prev - (code + CODE_ADAPTIVE_311)) : -1;
    }
    long lasti = *(int *)((char *)frame + L->lasti);
    return L->minor == 10 ? lasti * 2 : lasti; /* 3.10 counts instructions, 3.8/3.9 bytes */
}

/* The call ended: tells the probes how, leaving the result or the exception as it was. */
static void send_end(PyObject *event, PyObject *entered, PyObject *result, void *frame) {
    if (result != NULL) {
        PyObject *offset = PyLong_FromLong(last_offset(frame));
        if (offset == NULL)
            PyErr_Clear();
        send_event_at(event, entered, 0, result, offset);
        Py_XDECREF(offset);
        return;
    }
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    if (et == NULL) {
        send_event(event, entered, 1, Py_None);
        return;
    }
    PyErr_NormalizeException(&et, &ev, &etb);
    if (etb != NULL && ev != NULL)
        PyException_SetTraceback(ev, etb);
    send_event(event, entered, 1, ev);
    PyErr_Restore(et, ev, etb);
}

static int first_start(void *frame) {
    if (L->minor == 11) {
        uint16_t *prev = *(uint16_t **)((char *)frame + IF_PREV_INSTR);
        return prev != NULL && (*prev & 0xff) == OP_RETURN_GENERATOR;
    }
    return *(int *)((char *)frame + L->lasti) == -1;
}

static int suspended(void *frame) {
    if (L->minor == 11)
        return *(int8_t *)((char *)frame - GEN_STATE_BEFORE_IFRAME) == SUSPENDED;
    if (L->minor == 10)
        return *(int8_t *)((char *)frame + L->state) == SUSPENDED;
    return *(void **)((char *)frame + L->stacktop) != NULL;
}

static PyObject *run_site(PyThreadState *ts, void *frame, int throwflag, Site *s) {
    PyObject *entry = s->entry, *entered = NULL, *key = NULL, *result;
    int gen = s->gen, first = 1;
    if (gen) {
        if (L->minor == 11 && *(char *)((char *)frame + IF_OWNER) != 1)
            return call_prev(ts, frame, throwflag); /* 3.11: the call that only makes the generator */
        first = first_start(frame);
        if (first && throwflag) /* thrown into or closed before it ever ran: not a call */
            return call_prev(ts, frame, throwflag);
    }
    Py_INCREF(entry); /* set_sites() may run while the probes do: keep what we use */
    PyObject *start = PyTuple_GetItem(entry, 1), *event = PyTuple_GetItem(entry, 2);
    PyObject *live = PyTuple_GetItem(entry, 5);
    if (first) {
        PyObject *values = read_values(s, frame); /* before any Python runs: s may go away */
        if (values != NULL) {
            entered = call_quiet(start, values); /* start(*values): its parameters mirror the code's */
            Py_DECREF(values);
        } else {
            PyErr_Clear();
        }
    } else {
        key = PyLong_FromVoidPtr(frame);
        if (key != NULL) {
            entered = PyDict_GetItem(live, key); /* borrowed; no error set */
            Py_XINCREF(entered);
        } else {
            PyErr_Clear();
        }
        if (entered != NULL)
            send_event(event, entered, 3, NULL);
    }
    if (entered == NULL || entered == Py_None) {
        Py_XDECREF(entered);
        Py_XDECREF(key);
        Py_DECREF(entry);
        return call_prev(ts, frame, throwflag);
    }
    result = call_prev(ts, frame, throwflag);
    if (result == NULL && raise_note != NULL)
        raise_note(PyTuple_GetItem(entry, 0)); /* (s may be gone: set_sites ran with the probes) */
    if (gen && result != NULL && suspended(frame)) {
        if (first && ((key = PyLong_FromVoidPtr(frame)) == NULL || PyDict_SetItem(live, key, entered) < 0))
            PyErr_Clear(); /* memory only: this call's later events are not seen */
        send_event(event, entered, 2, NULL);
    } else {
        if (key != NULL && PyDict_DelItem(live, key) < 0)
            PyErr_Clear();
        send_end(event, entered, result, frame);
    }
    Py_XDECREF(key);
    Py_DECREF(entered);
    Py_DECREF(entry);
    return result;
}

static PyObject *evaluate(PyThreadState *ts, void *frame, int throwflag) {
    PyObject *code = *(PyObject **)((char *)frame + F_CODE);
    for (Py_ssize_t i = 0; i < nsites; i++)
        if (sites[i].code == code)
            return run_site(ts, frame, throwflag, &sites[i]);
    PyObject *result = call_prev(ts, frame, throwflag);
    if (result == NULL && raise_note != NULL)
        raise_note(code);
    return result;
}

static PyObject *evaluate38(void *frame, int throwflag) { return evaluate(NULL, frame, throwflag); }

static void *current_eval(void *interp) {
    if (L->minor == 8)
        return *(void **)((char *)interp + L->eval_frame);
    return get_eval(interp);
}

static void put_eval(void *interp, void *fn) {
    if (L->minor == 8)
        *(void **)((char *)interp + L->eval_frame) = fn;
    else
        set_eval(interp, fn);
}

static void *ours(void) { return L->minor == 8 ? (void *)evaluate38 : (void *)evaluate; }

static void free_sites(Site *table, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(table[i].entry);
        free(table[i].slots);
    }
    free(table);
}

static PyObject *set_sites(PyObject *self, PyObject *table) {
    if (!PyTuple_Check(table))
        return PyErr_Format(PyExc_TypeError, "set_sites() takes a tuple");
    Py_ssize_t n = PyTuple_Size(table);
    Site *fresh = n ? calloc((size_t)n, sizeof(Site)) : NULL;
    if (n && fresh == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyTuple_GetItem(table, i);
        if (!PyTuple_Check(e) || PyTuple_Size(e) != 6 || !PyTuple_Check(PyTuple_GetItem(e, 4)) ||
            !PyDict_Check(PyTuple_GetItem(e, 5))) {
            free_sites(fresh, i);
            return PyErr_Format(PyExc_TypeError, "site %zd is not (code, start, event, gen, slots, live)", i);
        }
        PyObject *slots = PyTuple_GetItem(e, 4);
        Site *s = &fresh[i];
        s->nslots = PyTuple_Size(slots);
        s->slots = malloc(sizeof(long) * (size_t)(s->nslots + 1));
        if (s->slots == NULL) {
            free_sites(fresh, i);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t j = 0; j < s->nslots; j++)
            s->slots[j] = PyLong_AsLong(PyTuple_GetItem(slots, j));
        s->gen = PyObject_IsTrue(PyTuple_GetItem(e, 3));
        s->code = PyTuple_GetItem(e, 0);
        s->entry = e;
        Py_INCREF(e);
        if (PyErr_Occurred()) {
            free_sites(fresh, i + 1);
            return NULL;
        }
    }
    Site *old = sites;
    Py_ssize_t nold = nsites;
    sites = fresh; /* under the GIL: no frame is between these two stores */
    nsites = n;
    void *interp = interp_now();
    if (n && !installed) {
        prev_eval = current_eval(interp);
        put_eval(interp, ours());
        installed = 1;
    } else if (!n && installed && current_eval(interp) == ours()) {
        put_eval(interp, prev_eval); /* else another evaluator chained us: stay, passing through */
        installed = 0;
    }
    free_sites(old, nold);
    Py_RETURN_NONE;
}

static PyObject *active(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(installed && current_eval(interp_now()) == ours());
}

/* The stack size threads started from Python get (threading.stack_size(); 0: the platform's
 * default), read without setting it: _thread.stack_size() with no argument resets it to 0. */
static PyObject *thread_stack_size(PyObject *self, PyObject *unused) {
    size_t (*get)(void) = (size_t (*)(void))dlsym(RTLD_DEFAULT, "PyThread_get_stacksize");
    if (get == NULL)
        Py_RETURN_NONE;
    return PyLong_FromSize_t(get());
}

static PyObject *set_raise_note(PyObject *self, PyObject *capsule) {
    void *fn = PyCapsule_GetPointer(capsule, "flight_mcp.raise_note");
    if (fn == NULL)
        return NULL;
    raise_note = (void (*)(PyObject *))fn; /* extension modules are never unloaded: it stays valid */
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_sites", set_sites, METH_O, "Replaces the instrumented sites; installs or removes the evaluator."},
    {"set_raise_note", set_raise_note, METH_O, "Tells trace's recorder of frames that end by an exception."},
    {"thread_stack_size", thread_stack_size, METH_NOARGS, "threading.stack_size(), read without changing it."},
    {"active", active, METH_NOARGS, "Whether our evaluator is the interpreter's current one."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *module) {
    const char *version = Py_GetVersion();
    int minor = (strncmp(version, "3.", 2) == 0) ? atoi(version + 2) : 0;
    L = NULL;
    for (size_t i = 0; i < sizeof(LAYOUTS) / sizeof(LAYOUTS[0]); i++)
        if (LAYOUTS[i].minor == minor)
            L = &LAYOUTS[i];
    if (L == NULL) {
        PyErr_Format(PyExc_ImportError, "no frame layout for Python %.10s (3.8-3.11 only)", version);
        return -1;
    }
    if (minor >= 9) {
        get_eval = (void *(*)(void *))dlsym(RTLD_DEFAULT, "_PyInterpreterState_GetEvalFrameFunc");
        set_eval = (void (*)(void *, void *))dlsym(RTLD_DEFAULT, "_PyInterpreterState_SetEvalFrameFunc");
        if (get_eval == NULL || set_eval == NULL) {
            PyErr_SetString(PyExc_ImportError, "the interpreter does not export _PyInterpreterState_SetEvalFrameFunc");
            return -1;
        }
    }
    PyObject *types = PyImport_ImportModule("types");
    PyObject *cell = types ? PyObject_GetAttrString(types, "CellType") : NULL;
    Py_XDECREF(types);
    if (cell == NULL)
        return -1;
    cell_type = (PyTypeObject *)cell; /* kept for the module's life */
    for (int i = 0; i < 4; i++)
        if ((WHAT[i] = PyLong_FromLong(i)) == NULL)
            return -1;
    if ((MINUS_ONE = PyLong_FromLong(-1)) == NULL)
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};
static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_flight_mcp_hook", NULL, 0, methods, slots};

PyMODINIT_FUNC PyInit__flight_mcp_hook(void) { return PyModuleDef_Init(&module_def); }
