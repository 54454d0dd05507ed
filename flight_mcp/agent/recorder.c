/* trace's call-tree recorder, for the thread running a traced call. Its events come from a C
 * profile function on that thread (Python <= 3.11), or on 3.12+ from C callbacks on a
 * sys.monitoring tool of its own (there the profile function is a shim that builds a frame object
 * per call); the agent's recording.py picks and switches the source.
 *
 * Why C: a Python profile function costs 3-6 us per recorded call, which made trace 30-90x slower
 * than the untraced code; this one costs a hash probe and a clock read per event.
 *
 * One build serves every target Python (3.8 and later): it uses the stable ABI only, and looks up
 * at load time the two functions outside it (PyEval_SetProfile, PyFrame_GetCode) in the target's
 * own interpreter. Loaded by the agent from its own folder; when it cannot be loaded the agent
 * falls back to its Python recorder (recording.py), which has the same interface and semantics.
 *
 * It also starts the agent's threads (start_thread): with pthread_create and a stack of the agent's
 * size, so they never inherit the target's threading.stack_size(), without touching that setting.
 *
 * Its few direct libc imports are pinned to their oldest versions (dlsym was GLIBC_2.34), and
 * pthread functions come from dlsym (libpthread before glibc 2.34): a build on a new glibc loads
 * into a target on an old one instead of leaving trace to the slower Python recorder.
 *
 * The tree is kept in preorder in one array. A call cheaper than the interval is dropped when it
 * returns (everything it called was cheaper still, so already dropped): memory holds only what
 * will be shown plus the open calls. Every node owns its label (code object, builtin callable)
 * from the start: a bound method lives only as long as its call, and a call may end unseen (its
 * command ended, so the recording stopped taking events) before its node is closed.
 */
#include "ext_common.h"
#include <structmember.h>
#include <pthread.h>
#include <time.h>

/* The profile events (Include/cpython/pystate.h); unchanged since Python 2. */
#define EV_CALL 0
#define EV_RETURN 3
#define EV_C_CALL 4
#define EV_C_EXCEPTION 5
#define EV_C_RETURN 6

/* Code kinds, as the agent's classify() returns them. */
#define K_USER 0
#define K_PASS 1  /* hook frames (trampolines): not shown, what they call is */
#define K_HIDE 2  /* the agent's own frames: nothing under them is shown */

#define Py_XSETREF_COMPAT(dst, src) do { PyObject *old_ = (PyObject *)(dst); (dst) = (src); Py_XDECREF(old_); } while (0)

typedef int (*profile_fn)(PyObject *, PyObject *, int, PyObject *);
static void (*set_profile)(profile_fn, PyObject *);
static PyObject *(*frame_get_code)(PyObject *); /* NULL on 3.8: read f_code instead */
static int (*frame_get_line)(PyObject *);       /* PyFrame_GetLineNumber (not in the stable ABI before 3.10) */
static int (*code_addr2line)(PyObject *, int);  /* PyCode_Addr2Line */

static PyObject *frame_code(PyObject *frame) {
    if (frame_get_code == NULL) /* 3.8 PyFrameObject: PyObject_VAR_HEAD, f_back, f_code */
        return *(PyObject **)((char *)frame + 4 * sizeof(void *));
    PyObject *code = frame_get_code(frame); /* new reference; the running frame keeps the code alive */
    Py_DECREF(code);
    return code;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.perf_counter()'s clock on Linux */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct {
    PyObject *label;
    PyObject *exc_type;  /* owned: the type of the exception that ended the call; NULL: none or unseen */
    int64_t start, cost; /* ns; cost -1 while the call runs */
    int32_t parent;      /* index of the parent node, -1 for the root */
    int32_t hidden;      /* calls hidden (by -i or -d) in this subtree */
    int32_t line;        /* raised: the line it raised at (a C call: its caller's line), -1 unknown */
    int8_t raised;       /* the call ended by an exception */
    int8_t builtin;      /* a C function (label is the callable) */
    int8_t keep_below;   /* a raised call kept in its subtree: kept too, however cheap */
} Node;

/* How a call ended: an exception (its object when the event gives it) and the line it left at. */
typedef struct {
    int raised;
    PyObject *exc; /* borrowed, or NULL */
    int line;
} End;

static const End RETURNED = {0, NULL, -1};

/* Calls that raised are kept however cheap (an exception caught higher up is seen where it was
 * raised), up to this many per invocation: exception-driven loops would flood the tree. */
#define MAX_RAISED_KEPT 20
/* Raised calls whose exception type is not known yet (the event did not give the exception): it
 * is looked for in exceptions seen later (handled ones, the traced call's own). */
#define MAX_PENDING 16

typedef struct {
    PyObject *code; /* owned */
    int kind;
} Slot;

struct Cell;

typedef struct Rec {
    PyObject_HEAD
    Node *nodes;
    Py_ssize_t n, cap;
    int32_t *stack; /* open calls: node indices, -1 for a call recorded only as a count */
    Py_ssize_t sp, stack_cap;
    Slot *kinds;
    Py_ssize_t nkinds, kinds_cap; /* open addressing by pointer, power of two */
    PyObject *classify, *setprofile, *root_code, *root_frame, *gap_label, *prev;
    struct Rec *chain; /* an earlier recording on this thread that gets every event too */
    int64_t interval_ns, max_nodes;
    int depth;       /* > 0: keep calls down to this level (root = 1) and ignore the interval */
    int agent_depth; /* > 0 while inside the agent's own frames */
    int stopped, active;
    int monitoring; /* events from our sys.monitoring tool (3.12+), else from the profile function */
    int bind_root;  /* the root's own start may still come: skip it (see frame_begins) */
    int counted;    /* monitoring: counted in mon_active */
    struct Cell *cell; /* monitoring: the thread it was activated on (a counted reference) */
    Py_ssize_t lost;   /* innermost open calls that got no stack entry (out of memory) */
    Py_ssize_t gap, dropped;
    int raised_kept;
    int npending;
    int32_t pending[MAX_PENDING];  /* nodes that raised an exception of a type not seen yet */
    PyObject *last_handled;        /* identity only (never read): the handled exception last searched */
} Rec;

/* ---- code kinds ---------------------------------------------------------------------------- */

static size_t slot_of(PyObject *code, Py_ssize_t cap) {
    size_t h = (size_t)code;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ULL;
    return (h >> 20) & (size_t)(cap - 1);
}

static void kinds_insert(Slot *table, Py_ssize_t cap, PyObject *code, int kind) {
    size_t i = slot_of(code, cap);
    while (table[i].code != NULL)
        i = (i + 1) & (size_t)(cap - 1);
    table[i].code = code;
    table[i].kind = kind;
}

static int kind_of(Rec *self, PyObject *code) {
    if (self->kinds != NULL) {
        size_t i = slot_of(code, self->kinds_cap);
        while (self->kinds[i].code != NULL) {
            if (self->kinds[i].code == code)
                return self->kinds[i].kind;
            i = (i + 1) & (size_t)(self->kinds_cap - 1);
        }
    }
    int kind = K_USER;
    PyObject *type, *value, *tb; /* never disturb an exception the application is raising */
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallFunctionObjArgs(self->classify, code, NULL);
    if (r != NULL) {
        kind = (int)PyLong_AsLong(r);
        if (kind < K_USER || kind > K_HIDE)
            kind = K_USER;
        Py_DECREF(r);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    if ((self->nkinds + 1) * 2 > self->kinds_cap) {
        Py_ssize_t cap = self->kinds_cap ? self->kinds_cap * 2 : 64;
        Slot *t = PyMem_Calloc((size_t)cap, sizeof(Slot));
        if (t == NULL)
            return kind; /* not cached: asked again next time */
        for (Py_ssize_t j = 0; j < self->kinds_cap; j++)
            if (self->kinds[j].code != NULL)
                kinds_insert(t, cap, self->kinds[j].code, self->kinds[j].kind);
        PyMem_Free(self->kinds);
        self->kinds = t;
        self->kinds_cap = cap;
    }
    Py_INCREF(code);
    kinds_insert(self->kinds, self->kinds_cap, code, kind);
    self->nkinds++;
    return kind;
}

/* ---- the tree -------------------------------------------------------------------------------- */

/* Doubles *buf (of *cap items of size item) when it is full; -1 when out of memory. */
static int grow(void **buf, Py_ssize_t *cap, Py_ssize_t used, size_t item) {
    if (used < *cap)
        return 0;
    void *bigger = PyMem_Realloc(*buf, (size_t)(*cap * 2) * item);
    if (bigger == NULL)
        return -1;
    *buf = bigger;
    *cap *= 2;
    return 0;
}

static int stack_push(Rec *self, int32_t index) {
    if (grow((void **)&self->stack, &self->stack_cap, self->sp, sizeof(int32_t)) < 0)
        return -1;
    self->stack[self->sp++] = index;
    return 0;
}

static Py_ssize_t node_add(Rec *self, PyObject *label, int32_t parent, int64_t start) {
    if (grow((void **)&self->nodes, &self->cap, self->n, sizeof(Node)) < 0)
        return -1;
    Node *node = &self->nodes[self->n];
    node->label = label;
    node->exc_type = NULL;
    node->start = start;
    node->cost = -1;
    node->parent = parent;
    node->hidden = 0;
    node->line = -1;
    node->raised = node->builtin = node->keep_below = 0;
    Py_INCREF(label);
    return self->n++;
}

static void node_free(Node *node) {
    Py_DECREF(node->label);
    Py_XDECREF(node->exc_type);
}

static void push(Rec *self, PyObject *label, int builtin) {
    if (self->lost) { /* below a call that could not be stacked: so is this one, or pops mis-nest */
        self->lost++;
        self->dropped++;
        return;
    }
    int32_t parent = self->stack[self->sp - 1];
    int32_t index = -1;
    if (parent >= 0) {
        if (self->depth > 0 && self->sp >= self->depth) /* below the last level shown */
            self->nodes[parent].hidden++;
        else if (self->n >= self->max_nodes)
            self->dropped++;
        else
            index = (int32_t)node_add(self, label, parent, now_ns());
        if (index >= 0)
            self->nodes[index].builtin = (int8_t)builtin;
    }
    if (stack_push(self, index) < 0) {
        /* Out of memory: forget the node and count the call as open without a stack entry; its
         * return then pops nothing (popping would end its parent's node early). */
        if (index >= 0)
            node_free(&self->nodes[--self->n]);
        self->lost = 1;
        self->dropped++;
    }
}

static int is_iteration_end(PyObject *type) {
    return PyErr_GivenExceptionMatches(type, PyExc_StopIteration) ||
           PyErr_GivenExceptionMatches(type, PyExc_StopAsyncIteration) ||
           PyErr_GivenExceptionMatches(type, PyExc_GeneratorExit);
}

/* The node raised: its facts, and whether it is kept however cheap. */
static int note_raised(Rec *self, int32_t index, const End *how) {
    Node *node = &self->nodes[index];
    node->raised = 1;
    node->line = how->line;
    if (how->exc != NULL) {
        PyObject *type = (PyObject *)Py_TYPE(how->exc);
        Py_INCREF(type);
        node->exc_type = type;
        if (is_iteration_end(type))
            return 0; /* how iteration ends, not a failure: kept only when costly */
    } else if (self->npending < MAX_PENDING) {
        self->pending[self->npending++] = index;
        self->last_handled = NULL; /* (a new exception may sit where a freed one was) */
    }
    if (self->raised_kept >= MAX_RAISED_KEPT)
        return 0;
    self->raised_kept++;
    return 1;
}

/* Ends the open node at index (the last one of the array when it is dropped). */
static void close_node(Rec *self, int32_t index, int64_t end, int force_keep, const End *how) {
    Node *node = &self->nodes[index];
    node->cost = end - node->start;
    Node *parent = &self->nodes[node->parent];
    if (how->raised && note_raised(self, index, how))
        force_keep = 1;
    if (!force_keep && !node->keep_below && self->depth <= 0 && node->cost < self->interval_ns) {
        parent->hidden++;
        for (Py_ssize_t i = index; i < self->n; i++)
            node_free(&self->nodes[i]);
        self->n = index;
        int kept = 0; /* forget the pending nodes dropped with it */
        for (int i = 0; i < self->npending; i++)
            if (self->pending[i] < index)
                self->pending[kept++] = self->pending[i];
        self->npending = kept;
        return;
    }
    parent->hidden += node->hidden;
    if (force_keep || node->keep_below)
        parent->keep_below = 1;
}

static void pop(Rec *self, const End *how) {
    if (self->lost) {
        self->lost--;
        return;
    }
    if (self->sp <= 1)
        return; /* the root ends with finish() */
    int32_t index = self->stack[--self->sp];
    if (index >= 0)
        close_node(self, index, now_ns(), 0, how);
}

/* ---- exceptions whose type an event did not give -------------------------------------------- */

static PyObject *attr(PyObject *obj, const char *name) {
    PyObject *v = PyObject_GetAttrString(obj, name); /* tracebacks and frames: C getters only */
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* Gives the pending nodes their exception's type when exc (or an exception it was raised while
 * handling) passed through them: its traceback has an entry for their code at the line they
 * raised at (a C call: its caller's code and line, where the exception entered Python). */
static void resolve(Rec *self, PyObject *exc) {
    PyObject *et, *ev, *etb; /* never disturb an exception the application is raising */
    PyErr_Fetch(&et, &ev, &etb);
    Py_XINCREF(exc);
    for (int chain = 0; exc != NULL && chain < 4 && self->npending > 0; chain++) {
        PyObject *tb = PyExceptionInstance_Check(exc) ? PyException_GetTraceback(exc) : NULL;
        for (int steps = 0; tb != NULL && tb != Py_None && steps < 200 && self->npending > 0; steps++) {
            PyObject *frame = attr(tb, "tb_frame"), *lineno = attr(tb, "tb_lineno"), *next = attr(tb, "tb_next");
            if (frame != NULL && lineno != NULL && PyLong_Check(lineno)) {
                PyObject *code = frame_code(frame);
                long line = PyLong_AsLong(lineno);
                int origin = next == NULL || next == Py_None;
                for (int i = 0; i < self->npending; i++) {
                    Node *node = &self->nodes[self->pending[i]];
                    PyObject *where = node->builtin ? self->nodes[node->parent].label : node->label;
                    if (where != code || node->line != line || (node->builtin && !origin))
                        continue;
                    Py_INCREF((PyObject *)Py_TYPE(exc));
                    node->exc_type = (PyObject *)Py_TYPE(exc);
                    self->pending[i--] = self->pending[--self->npending];
                }
            }
            PyErr_Clear();
            Py_XDECREF(frame);
            Py_XDECREF(lineno);
            Py_DECREF(tb);
            tb = next;
        }
        Py_XDECREF(tb);
        PyObject *context = PyExceptionInstance_Check(exc) ? PyException_GetContext(exc) : NULL;
        Py_DECREF(exc);
        exc = context;
    }
    Py_XDECREF(exc);
    PyErr_Restore(et, ev, etb);
}

/* While raised calls wait for their type: the exception being handled now (an except block of
 * the caller) may be theirs. Searched once per handled exception. */
static void look_at_handled(Rec *self) {
    PyObject *t, *v, *tb;
    PyErr_GetExcInfo(&t, &v, &tb);
    if (v != NULL && v != Py_None && v != self->last_handled) {
        self->last_handled = v;
        resolve(self, v);
    }
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
}

/* A Python frame starts or resumes. */
static void frame_begins(Rec *self, PyObject *code, PyObject *frame) {
    int kind = kind_of(self, code);
    if (kind == K_HIDE) {
        self->agent_depth++;
        return;
    }
    if (self->agent_depth || kind == K_PASS)
        return;
    if (self->bind_root && code == self->root_code && self->sp == 1) {
        /* The trampoline's probe starts the recording before the root frame exists: its first
         * frame of the root code is the root itself. */
        self->bind_root = 0;
        Py_XINCREF(frame);
        self->root_frame = frame;
        return;
    }
    push(self, code, 0);
}

/* A Python frame returns, yields or unwinds. */
static void frame_ends(Rec *self, PyObject *code, const End *how) {
    int kind = kind_of(self, code);
    if (kind == K_HIDE) {
        if (self->agent_depth)
            self->agent_depth--;
        return;
    }
    if (!self->agent_depth && kind == K_USER)
        pop(self, how);
}

/* A C function called from caller_code begins or ends. */
static void c_call(Rec *self, PyObject *caller_code, PyObject *callable, int begins, const End *how) {
    if (self->agent_depth || kind_of(self, caller_code) != K_USER)
        return;
    if (begins)
        push(self, callable, 1);
    else
        pop(self, how);
}

/* The line a frame is at (profile events), or of an instruction offset (sys.monitoring). */
static int frame_line(PyObject *frame) { return frame_get_line != NULL ? frame_get_line(frame) : -1; }

static int offset_line(PyObject *code, PyObject *offset) {
    if (code_addr2line == NULL || offset == NULL || !PyLong_Check(offset))
        return -1;
    long at = PyLong_AsLong(offset);
    if (at == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return code_addr2line(code, (int)at);
}

/* sys.monitoring reports every callable's CALL and the end of every one that is not a Python
 * function; the profile function saw only C functions and method descriptors: keep to those. */
static PyObject *c_function_type, *method_descriptor_type;

static int is_c_function(PyObject *callable) {
    PyObject *type = (PyObject *)Py_TYPE(callable);
    return type == c_function_type || type == method_descriptor_type;
}

#define MON_BEGINS 100
#define MON_ENDS 101
#define MON_C_CALL 102
#define MON_C_ENDS 103
#define MON_UNWINDS 104
#define MON_C_RAISES 105

/* offset: sys.monitoring's instruction offset (MON_UNWINDS, MON_C_RAISES). */
static void record(Rec *self, int what, PyObject *frame, PyObject *code, PyObject *arg, PyObject *offset) {
    int expected;
    End how = RETURNED;
    if (self->npending > 0)
        look_at_handled(self);
    switch (what) {
    case EV_CALL:
        if (frame != self->root_frame)
            frame_begins(self, frame_code(frame), frame);
        return;
    case EV_RETURN:
        if (frame != self->root_frame) {
            if (arg == NULL) { /* it unwinds: the exception is not given to profile functions */
                how.raised = 1;
                how.line = frame_line(frame);
            }
            frame_ends(self, frame_code(frame), &how);
        }
        return;
    case EV_C_EXCEPTION:
        how.raised = 1;
        how.line = frame_line(frame);
        c_call(self, frame_code(frame), arg, 0, &how);
        return;
    case EV_C_CALL:
    case EV_C_RETURN:
        c_call(self, frame_code(frame), arg, what == EV_C_CALL, &how);
        return;
    case MON_BEGINS:
        /* Our tool may be called for the root's start (or resumption) after the probe's tool
         * started the recording: then it is the very first event we get. */
        expected = self->bind_root;
        self->bind_root = 0;
        if (!(expected && code == self->root_code))
            frame_begins(self, code, NULL);
        return;
    case MON_ENDS:
        self->bind_root = 0;
        frame_ends(self, code, &how);
        return;
    case MON_UNWINDS:
        self->bind_root = 0;
        how.raised = 1;
        how.exc = arg != NULL && PyExceptionInstance_Check(arg) ? arg : NULL;
        how.line = offset_line(code, offset);
        if (how.exc != NULL && self->npending > 0)
            resolve(self, how.exc); /* its C callees that raised it */
        frame_ends(self, code, &how);
        return;
    case MON_C_CALL:
    case MON_C_ENDS:
    case MON_C_RAISES:
        self->bind_root = 0;
        if (what == MON_C_RAISES) { /* the exception is not given to C_RAISE callbacks */
            how.raised = 1;
            how.line = offset_line(code, offset);
        }
        if (is_c_function(arg))
            c_call(self, code, arg, what == MON_C_CALL, &how);
        return;
    default:
        return;
    }
}

static void dispatch(Rec *self, int what, PyObject *frame, PyObject *code, PyObject *arg, PyObject *offset) {
    if (self->chain != NULL) { /* another trace records on this thread too (two clients) */
        if (self->chain->stopped)
            Py_CLEAR(self->chain);
        else
            dispatch(self->chain, what, frame, code, arg, offset);
    }
    record(self, what, frame, code, arg, offset);
}

/* ---- events from sys.monitoring (3.12+) ------------------------------------------------------ */

/* pthread functions, from dlsym at load (see the top of the file); NULL when not found. */
static int (*key_create)(pthread_key_t *, void (*)(void *));
static int (*key_set)(pthread_key_t, const void *);
static int (*attr_init)(pthread_attr_t *);
static int (*attr_destroy)(pthread_attr_t *);
static int (*attr_set_stack)(pthread_attr_t *, size_t);
static int (*attr_set_detach)(pthread_attr_t *, int);
static int (*thread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

/* Events are global to a tool, so each thread finds its recording through its cell. The cell is
 * on the heap, not in thread-local storage, so that the command's own thread can hand it back
 * when the command ends (rec_stop): a recording must not stay referenced until its thread's next
 * event, which may never come (events off, the thread blocked or gone). A cell lives while its
 * thread does or a recording activated on it does, whichever is longer. */
typedef struct Cell {
    PyObject *current; /* strong reference to the running Rec, or NULL; changed with the GIL held */
    int refs;          /* its thread until it exits, plus each Rec activated on it (atomic) */
} Cell;

static __thread Cell *thread_cell;
static pthread_key_t cell_key; /* its destructor drops the thread's reference at thread exit */
static int have_cell_key;

/* Also runs at thread exit without the GIL: touches only the atomic count and libc's heap. */
static void cell_release(void *p) {
    Cell *cell = p;
    if (__atomic_sub_fetch(&cell->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(cell);
}

/* The calling thread's cell, created on first use; NULL when out of memory. */
static Cell *my_cell(void) {
    Cell *cell = thread_cell;
    if (cell == NULL && have_cell_key) {
        cell = calloc(1, sizeof(Cell));
        if (cell == NULL)
            return NULL;
        cell->refs = 1;
        if (key_set(cell_key, cell) != 0) {
            free(cell);
            return NULL;
        }
        thread_cell = cell;
    }
    return cell;
}

static PyObject *mon_switch;    /* switch(on): our tool's events on or off (recording.py) */
static Py_ssize_t mon_active;  /* threads whose current recording runs: events on while > 0 */

static void call_quietly(PyObject *fn, PyObject *arg) {
    if (fn == NULL)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallFunctionObjArgs(fn, arg, NULL);
    Py_XDECREF(r);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

static void mon_count(Rec *self, int on) {
    if (!self->monitoring || self->counted == on || (on && self->stopped))
        return;
    self->counted = on;
    if (on ? mon_active++ == 0 : --mon_active == 0)
        call_quietly(mon_switch, on ? Py_True : Py_False);
}

static int rec_profile(PyObject *obj, PyObject *frame, int what, PyObject *arg);

/* Gives the thread back what recorded before this recording started. */
static void restore_prev(Rec *self) {
    self->active = 0;
    PyObject *prev = self->prev;
    if (self->monitoring) {
        Cell *cell = self->cell;
        if (cell != NULL && cell->current == (PyObject *)self) {
            /* Recordings whose command ended are skipped, not reinstalled to step aside later. */
            while (prev != NULL && ((Rec *)prev)->stopped)
                prev = ((Rec *)prev)->prev;
            Py_XINCREF(prev);
            cell->current = prev;
            if (prev != NULL) {
                ((Rec *)prev)->active = 1;
                mon_count((Rec *)prev, 1);
            }
            mon_count(self, 0);
            Py_DECREF(self); /* the cell's reference: the caller holds another */
        }
    } else if (prev != NULL && Py_TYPE(prev) == Py_TYPE(self)) {
        ((Rec *)prev)->active = 1;
        set_profile(rec_profile, prev);
    } else if (prev == NULL || !PyCallable_Check(prev)) {
        /* Never hand sys.setprofile a non-callable: it would raise into the application at its
         * next event. (The agent does not start a recording over such a profiler.) */
        set_profile(NULL, NULL);
    } else { /* a Python-level profile function (sys.setprofile): hand it back the same way */
        call_quietly(self->setprofile, prev);
    }
}

static int rec_profile(PyObject *obj, PyObject *frame, int what, PyObject *arg) {
    Rec *self = (Rec *)obj;
    if (self->stopped) { /* the command ended while this call runs: stop recording it */
        if (self->active)
            restore_prev(self);
        return 0;
    }
    dispatch(self, what, frame, NULL, arg, NULL); /* calls Python only to classify a new code object */
    return 0;
}

/* Python <= 3.11: where PyThreadState keeps the profile function and its object (3.8-3.10, 3.11). */
static long ts_profile_func = -1, ts_profile_obj = -1;

/* The frame evaluator (hook.c) tells us of each frame that ends by an exception, right after the
 * frame's return event, with the exception still set: the call just closed gets its type, which
 * the profile function is not given. */
static void raise_note(PyObject *code) {
    if (ts_profile_func < 0)
        return;
    PyThreadState *ts = PyThreadState_Get();
    if (*(profile_fn *)((char *)ts + ts_profile_func) != rec_profile)
        return;
    PyObject *type = PyErr_Occurred();
    if (type == NULL)
        return;
    for (Rec *self = *(Rec **)((char *)ts + ts_profile_obj); self != NULL; self = self->chain) {
        if (self->stopped || self->npending == 0)
            continue;
        int32_t index = self->pending[self->npending - 1];
        Node *node = &self->nodes[index];
        if (node->builtin || node->label != code || node->exc_type != NULL)
            continue;
        Py_INCREF(type);
        node->exc_type = type;
        self->npending--;
        for (int i = 0; i < self->npending; i++) { /* a built-in it called raised it, on that line */
            Node *c = &self->nodes[self->pending[i]];
            if (c->builtin && c->parent == index && c->line == node->line) {
                Py_INCREF(type);
                c->exc_type = type;
                self->pending[i--] = self->pending[--self->npending];
            }
        }
    }
}

static PyObject *mon_event(int what, PyObject *const *args, Py_ssize_t nargs) {
    Cell *cell = thread_cell;
    Rec *self = cell != NULL ? (Rec *)cell->current : NULL;
    if (self == NULL || nargs < 2)
        Py_RETURN_NONE;
    if (self->stopped) {
        Py_INCREF(self); /* restore_prev drops the cell's reference */
        restore_prev(self);
        Py_DECREF(self);
        Py_RETURN_NONE;
    }
    /* Held while it records: classifying a new code object runs Python, which may let the
     * command's thread end the command and drop the cell's reference (rec_stop). */
    Py_INCREF(self);
    dispatch(self, what, NULL, args[0], nargs > 2 ? args[2] : NULL, args[1]);
    Py_DECREF(self);
    Py_RETURN_NONE;
}

/* PY_START, PY_RESUME, PY_THROW */
static PyObject *mon_begins(PyObject *m, PyObject *const *args, Py_ssize_t n) { return mon_event(MON_BEGINS, args, n); }
/* PY_RETURN, PY_YIELD, PY_UNWIND */
static PyObject *mon_ends(PyObject *m, PyObject *const *args, Py_ssize_t n) { return mon_event(MON_ENDS, args, n); }
/* CALL */
static PyObject *mon_call(PyObject *m, PyObject *const *args, Py_ssize_t n) {
    return n >= 3 ? mon_event(MON_C_CALL, args, n) : (Py_INCREF(Py_None), Py_None);
}
/* C_RETURN */
static PyObject *mon_c_ends(PyObject *m, PyObject *const *args, Py_ssize_t n) {
    return n >= 3 ? mon_event(MON_C_ENDS, args, n) : (Py_INCREF(Py_None), Py_None);
}
/* PY_UNWIND */
static PyObject *mon_unwinds(PyObject *m, PyObject *const *args, Py_ssize_t n) {
    return n >= 3 ? mon_event(MON_UNWINDS, args, n) : (Py_INCREF(Py_None), Py_None);
}
/* C_RAISE */
static PyObject *mon_c_raises(PyObject *m, PyObject *const *args, Py_ssize_t n) {
    return n >= 3 ? mon_event(MON_C_RAISES, args, n) : (Py_INCREF(Py_None), Py_None);
}

static PyObject *monitoring_needed(PyObject *m, PyObject *unused) { return PyBool_FromLong(mon_active > 0); }

static PyObject *configure_monitoring(PyObject *m, PyObject *args) {
    PyObject *sw, *cfunc, *descr;
    if (!PyArg_ParseTuple(args, "OOO", &sw, &cfunc, &descr))
        return NULL;
    if (!have_cell_key) {
        PyErr_SetString(PyExc_RuntimeError, "no thread-exit hook (pthread_key_create) in this process");
        return NULL;
    }
    Py_INCREF(sw);
    Py_INCREF(cfunc);
    Py_INCREF(descr);
    Py_XSETREF_COMPAT(mon_switch, sw);
    Py_XSETREF_COMPAT(c_function_type, cfunc);
    Py_XSETREF_COMPAT(method_descriptor_type, descr);
    Py_RETURN_NONE;
}

/* ---- the agent's threads ----------------------------------------------------------------------- */

static void *thread_main(void *fn) {
    PyGILState_STATE state = PyGILState_Ensure();
    PyObject *r = PyObject_CallObject((PyObject *)fn, NULL);
    if (r == NULL)
        PyErr_Clear(); /* the agent's callable catches its own errors; nothing may reach the target */
    Py_XDECREF(r);
    Py_DECREF((PyObject *)fn);
    PyGILState_Release(state);
    return NULL;
}

/* start_thread(fn, stack_bytes) -> ident: fn() on a new detached thread with a stack of that size.
 * _thread.start_new_thread would use the size the target set with threading.stack_size(), and
 * changing that setting around it would show our size to the target, or give it to a thread the
 * target starts meanwhile (the GIL can change hands between two bytecodes). */
static PyObject *start_thread(PyObject *m, PyObject *args) {
    PyObject *fn;
    Py_ssize_t stack_bytes;
    if (!PyArg_ParseTuple(args, "On", &fn, &stack_bytes))
        return NULL;
    if (thread_create == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_create is not visible in this process");
        return NULL;
    }
    pthread_attr_t attr;
    pthread_t thread;
    int err = attr_init(&attr);
    if (err == 0) {
        err = attr_set_stack(&attr, (size_t)stack_bytes);
        if (err == 0)
            err = attr_set_detach(&attr, PTHREAD_CREATE_DETACHED);
        if (err == 0) {
            Py_INCREF(fn); /* the thread's */
            err = thread_create(&thread, &attr, thread_main, fn);
            if (err != 0)
                Py_DECREF(fn);
        }
        attr_destroy(&attr);
    }
    if (err != 0) {
        PyErr_Format(PyExc_RuntimeError, "cannot start a thread with a %zd-byte stack: %s", stack_bytes,
                     strerror(err));
        return NULL;
    }
    return PyLong_FromUnsignedLong((unsigned long)thread);
}

/* ---- the Python interface -------------------------------------------------------------------- */

/* prev: sys.getprofile() for the profile function; unused with sys.monitoring (the thread's
 * current recording is the one before). */
static PyObject *rec_activate(Rec *self, PyObject *prev) {
    Cell *cell = NULL;
    if (self->monitoring) {
        cell = my_cell();
        if (cell == NULL) /* out of memory: this call goes unrecorded */
            Py_RETURN_NONE;
        if (self->cell != cell) { /* resumed on another thread (a coroutine) */
            if (self->cell != NULL) {
                if (self->active)
                    restore_prev(self);
                cell_release(self->cell);
            }
            __atomic_add_fetch(&cell->refs, 1, __ATOMIC_ACQ_REL);
            self->cell = cell;
        }
        prev = cell->current != NULL ? cell->current : Py_None;
    }
    if (prev == (PyObject *)self) /* activated twice: keep the first prev */
        Py_RETURN_NONE;
    Py_CLEAR(self->prev);
    Py_CLEAR(self->chain);
    if (prev != Py_None) {
        Py_INCREF(prev);
        self->prev = prev;
        if (Py_TYPE(prev) == Py_TYPE(self)) {
            ((Rec *)prev)->active = 0; /* no longer installed: it gets its events through us */
            if (!((Rec *)prev)->stopped) {
                Py_INCREF(prev);
                self->chain = (Rec *)prev;
            }
        }
    }
    self->active = 1;
    if (self->monitoring) {
        self->bind_root = 1;
        Py_INCREF(self);
        PyObject *old = cell->current;
        cell->current = (PyObject *)self;
        Py_XDECREF(old); /* still held by self->prev */
        mon_count(self, 1);
        /* Its thread is counted once, through us. (Switching events on runs Python, during which
         * our command may have ended and handed the thread back to prev: then prev counts.) */
        if (cell->current == (PyObject *)self && self->prev != NULL && Py_TYPE(self->prev) == Py_TYPE(self))
            mon_count((Rec *)self->prev, 0);
    } else {
        set_profile(rec_profile, (PyObject *)self);
    }
    Py_RETURN_NONE;
}

static PyObject *rec_deactivate(Rec *self, PyObject *unused) {
    if (self->active) /* only the installed one: a later trace on this thread may have taken over */
        restore_prev(self);
    Py_RETURN_NONE;
}

static PyObject *rec_stop(Rec *self, PyObject *unused) {
    self->stopped = 1;
    /* A profile function steps aside at its thread's next event (only that thread can change it);
     * a monitoring recording is handed back here, through its thread's cell. */
    if (self->monitoring && self->active)
        restore_prev(self);
    mon_count(self, 0);
    Py_RETURN_NONE;
}

static void close_open(Rec *self, int64_t end) {
    self->lost = 0;
    while (self->sp > 1) {
        int32_t index = self->stack[--self->sp];
        if (index >= 0)
            close_node(self, index, end, 0, &RETURNED);
    }
}

static PyObject *rec_suspend(Rec *self, PyObject *unused) {
    int64_t t = now_ns();
    close_open(self, t); /* frames that suspend with the root already sent their returns */
    self->gap = -1;
    if (self->depth > 0 && self->depth < 2)
        self->nodes[0].hidden++;
    else if (self->n < self->max_nodes)
        self->gap = node_add(self, self->gap_label, 0, t);
    Py_RETURN_NONE;
}

static PyObject *rec_resume(Rec *self, PyObject *unused) {
    if (self->gap >= 0) { /* dropped if cheap only while it is the last node (nothing recorded since) */
        close_node(self, (int32_t)self->gap, now_ns(), self->gap != self->n - 1, &RETURNED);
        self->gap = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *rec_finish(Rec *self, PyObject *unused) {
    int64_t end = now_ns();
    if (self->monitoring && self->active)
        restore_prev(self);
    if (self->gap >= 0)
        rec_resume(self, NULL);
    close_open(self, end);
    Node *root = &self->nodes[0];
    if (root->cost < 0)
        root->cost = end - root->start;
    self->stopped = 1; /* still installed or chained somewhere: it steps aside at the next event */
    mon_count(self, 0);
    Py_CLEAR(self->root_frame);
    Py_CLEAR(self->chain);
    return PyFloat_FromDouble(root->cost / 1e9);
}

/* [label, start_s, [children...], cost_s, raised, exception type or None, line or None] per node,
 * as the Python recorder builds them. */
static PyObject *rec_tree(Rec *self, PyObject *unused) {
    PyObject **kids = PyMem_Calloc((size_t)self->n, sizeof(PyObject *));
    PyObject *root = NULL;
    if (kids == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Node *node = &self->nodes[i];
        double cost = node->cost < 0 ? 0.0 : node->cost / 1e9;
        PyObject *children = PyList_New(0);
        PyObject *line = node->line >= 0 ? PyLong_FromLong(node->line) : (Py_INCREF(Py_None), Py_None);
        PyObject *item = children && line ? Py_BuildValue("[OdOdOOO]", node->label, node->start / 1e9, children, cost,
                                                          node->raised ? Py_True : Py_False,
                                                          node->exc_type ? node->exc_type : Py_None, line) : NULL;
        Py_XDECREF(line);
        Py_XDECREF(children);
        if (item == NULL)
            goto done;
        kids[i] = children; /* borrowed: item holds it */
        if (i == 0) {
            root = item;
        } else {
            int failed = PyList_Append(kids[node->parent], item);
            Py_DECREF(item);
            if (failed)
                goto done;
        }
    }
    PyMem_Free(kids);
    return root;
done:
    PyMem_Free(kids);
    Py_XDECREF(root);
    return NULL;
}

static PyObject *rec_resolve(Rec *self, PyObject *exc) {
    if (self->npending > 0)
        resolve(self, exc);
    Py_RETURN_NONE;
}

static PyObject *rec_get_hidden(Rec *self, void *unused) { return PyLong_FromLong(self->nodes[0].hidden); }
static PyObject *rec_get_dropped(Rec *self, void *unused) { return PyLong_FromSsize_t(self->dropped); }
static PyObject *rec_get_stopped(Rec *self, void *unused) { return PyBool_FromLong(self->stopped); }

static void rec_dealloc(Rec *self) {
    PyTypeObject *tp = Py_TYPE(self);
    for (Py_ssize_t i = 0; i < self->n; i++)
        node_free(&self->nodes[i]);
    for (Py_ssize_t i = 0; i < self->kinds_cap; i++)
        Py_XDECREF(self->kinds[i].code);
    PyMem_Free(self->nodes);
    PyMem_Free(self->stack);
    PyMem_Free(self->kinds);
    Py_XDECREF(self->classify);
    Py_XDECREF(self->setprofile);
    Py_XDECREF(self->root_code);
    Py_XDECREF(self->root_frame);
    Py_XDECREF(self->gap_label);
    Py_XDECREF(self->prev);
    Py_XDECREF((PyObject *)self->chain);
    if (self->cell != NULL)
        cell_release(self->cell);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

/* Recording(root_code, root_frame, gap_label, classify, setprofile, interval_s, depth, max_nodes,
 *           monitoring=False) */
static PyObject *rec_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *code, *frame, *gap, *classify, *setprofile;
    double interval_s;
    int depth;
    long long max_nodes;
    int monitoring = 0;
    if (!PyArg_ParseTuple(args, "OOOOOdiL|p", &code, &frame, &gap, &classify, &setprofile, &interval_s, &depth,
                          &max_nodes, &monitoring))
        return NULL;
    if (monitoring && (mon_switch == NULL || c_function_type == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "configure_monitoring() first");
        return NULL;
    }
    Rec *self = (Rec *)PyType_GenericNew(type, NULL, NULL);
    if (self == NULL)
        return NULL;
    self->cap = 64;
    self->stack_cap = 64;
    self->nodes = PyMem_Malloc((size_t)self->cap * sizeof(Node));
    self->stack = PyMem_Malloc((size_t)self->stack_cap * sizeof(int32_t));
    if (self->nodes == NULL || self->stack == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    Py_INCREF(code);
    Py_INCREF(gap);
    Py_INCREF(classify);
    Py_INCREF(setprofile);
    self->root_code = code;
    self->gap_label = gap;
    self->classify = classify;
    self->setprofile = setprofile;
    self->monitoring = monitoring;
    if (frame != Py_None && !monitoring) {
        Py_INCREF(frame);
        self->root_frame = frame;
    }
    self->bind_root = self->root_frame == NULL;
    self->interval_ns = (int64_t)(interval_s * 1e9);
    self->depth = depth;
    self->max_nodes = max_nodes < 1 ? 1 : max_nodes;
    self->gap = -1;
    node_add(self, code, -1, now_ns());
    self->stack[self->sp++] = 0;
    return (PyObject *)self;
}

static PyMethodDef rec_methods[] = {
    {"activate", (PyCFunction)rec_activate, METH_O, "Record this thread's calls; prev = sys.getprofile()."},
    {"deactivate", (PyCFunction)rec_deactivate, METH_NOARGS, "Give the thread its previous profile function."},
    {"stop", (PyCFunction)rec_stop, METH_NOARGS, "The command ended: stop at this thread's next event."},
    {"suspend", (PyCFunction)rec_suspend, METH_NOARGS, "The traced call suspended (await / yield)."},
    {"resume", (PyCFunction)rec_resume, METH_NOARGS, "The traced call resumed."},
    {"finish", (PyCFunction)rec_finish, METH_NOARGS, "The traced call ended; returns its cost in seconds."},
    {"tree", (PyCFunction)rec_tree, METH_NOARGS,
     "The kept nodes as [label, start, children, cost, raised, exception type, line] lists."},
    {"resolve", (PyCFunction)rec_resolve, METH_O, "Types for raised calls from an exception seen afterwards."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rec_getset[] = {
    {"hidden", (getter)rec_get_hidden, NULL, "calls hidden by -i / -d", NULL},
    {"dropped", (getter)rec_get_dropped, NULL, "calls past the node cap, counted only", NULL},
    {"stopped", (getter)rec_get_stopped, NULL, "stop() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot rec_slots[] = {
    {Py_tp_new, rec_new},
    {Py_tp_dealloc, rec_dealloc},
    {Py_tp_methods, rec_methods},
    {Py_tp_getset, rec_getset},
    {Py_tp_doc, "One traced invocation's call tree, recorded by a C profile function."},
    {0, NULL},
};

static PyType_Spec rec_spec = {"_flight_mcp_recorder.Recording", sizeof(Rec), 0, Py_TPFLAGS_DEFAULT, rec_slots};

static int module_exec(PyObject *m) {
    set_profile = (void (*)(profile_fn, PyObject *))dlsym(RTLD_DEFAULT, "PyEval_SetProfile");
    frame_get_code = (PyObject * (*)(PyObject *)) dlsym(RTLD_DEFAULT, "PyFrame_GetCode");
    frame_get_line = (int (*)(PyObject *))dlsym(RTLD_DEFAULT, "PyFrame_GetLineNumber");
    code_addr2line = (int (*)(PyObject *, int))dlsym(RTLD_DEFAULT, "PyCode_Addr2Line");
    const char *version = Py_GetVersion();
    if (set_profile == NULL || (frame_get_code == NULL && strncmp(version, "3.8.", 4) != 0)) {
        PyErr_SetString(PyExc_ImportError, "the interpreter's PyEval_SetProfile/PyFrame_GetCode are not visible");
        return -1;
    }
    attr_init = (int (*)(pthread_attr_t *))dlsym(RTLD_DEFAULT, "pthread_attr_init");
    attr_destroy = (int (*)(pthread_attr_t *))dlsym(RTLD_DEFAULT, "pthread_attr_destroy");
    attr_set_stack = (int (*)(pthread_attr_t *, size_t))dlsym(RTLD_DEFAULT, "pthread_attr_setstacksize");
    attr_set_detach = (int (*)(pthread_attr_t *, int))dlsym(RTLD_DEFAULT, "pthread_attr_setdetachstate");
    thread_create = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(
        RTLD_DEFAULT, "pthread_create");
    if (!attr_init || !attr_destroy || !attr_set_stack || !attr_set_detach)
        thread_create = NULL; /* start_thread says so */
    key_create = (int (*)(pthread_key_t *, void (*)(void *)))dlsym(RTLD_DEFAULT, "pthread_key_create");
    key_set = (int (*)(pthread_key_t, const void *))dlsym(RTLD_DEFAULT, "pthread_setspecific");
    if (!have_cell_key && key_create != NULL && key_set != NULL && key_create(&cell_key, cell_release) == 0)
        have_cell_key = 1; /* once per process: the module may be loaded again after a detach */
    int minor = strncmp(version, "3.", 2) == 0 ? atoi(version + 2) : 0;
    if (minor >= 8 && minor <= 10) {
        ts_profile_func = 56;
        ts_profile_obj = 72;
    } else if (minor == 11) {
        ts_profile_func = 64;
        ts_profile_obj = 80;
    }
    PyObject *note = PyCapsule_New((void *)raise_note, "flight_mcp.raise_note", NULL);
    if (note == NULL || PyModule_AddObject(m, "raise_note", note) < 0) {
        Py_XDECREF(note);
        return -1;
    }
    PyObject *type = PyType_FromSpec(&rec_spec);
    if (type == NULL)
        return -1;
    if (PyModule_AddObject(m, "Recording", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

#ifndef METH_FASTCALL
#define METH_FASTCALL 0x0080 /* stable ABI from 3.10; used only on 3.12+ */
#endif

static PyMethodDef module_methods[] = {
    {"configure_monitoring", configure_monitoring, METH_VARARGS,
     "configure_monitoring(switch, builtin_function_type, method_descriptor_type)"},
    {"start_thread", start_thread, METH_VARARGS, "start_thread(fn, stack_bytes) -> ident of a new thread running fn()"},
    {"monitoring_needed", monitoring_needed, METH_NOARGS, "Some thread records now: events must be on."},
    {"mon_begins", (PyCFunction)(void (*)(void))mon_begins, METH_FASTCALL, "PY_START / PY_RESUME / PY_THROW"},
    {"mon_ends", (PyCFunction)(void (*)(void))mon_ends, METH_FASTCALL, "PY_RETURN / PY_YIELD / PY_UNWIND"},
    {"mon_call", (PyCFunction)(void (*)(void))mon_call, METH_FASTCALL, "CALL"},
    {"mon_c_ends", (PyCFunction)(void (*)(void))mon_c_ends, METH_FASTCALL, "C_RETURN"},
    {"mon_unwinds", (PyCFunction)(void (*)(void))mon_unwinds, METH_FASTCALL, "PY_UNWIND"},
    {"mon_c_raises", (PyCFunction)(void (*)(void))mon_c_raises, METH_FASTCALL, "C_RAISE"},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, module_exec}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_flight_mcp_recorder", "trace's C call-tree recorder", 0, module_methods, module_slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__flight_mcp_recorder(void) { return PyModuleDef_Init(&module_def); }
