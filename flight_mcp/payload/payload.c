/*
 * flight-mcp payload: the only code that runs on a hijacked thread.
 *
 * The injector dlopen()s a private copy of this library into the target. Its constructor runs on
 * whatever thread the injector borrowed, at a safe point (a thread blocked in a system call), and
 * under the dynamic loader's lock. So it calls nothing of Python's: it only starts a detached
 * native thread with pthread_create and returns. Even PyThread_start_new_thread was too much there:
 * it allocates through Python's allocator, which takes the GIL when tracemalloc traces, and the GIL
 * holder may be waiting for the loader lock we hold (a deadlock of the whole target).
 *
 * The new thread has a stack of our size (STACK_BYTES), whatever the target chose with
 * threading.stack_size(): the bootstrap and the agent's listener run on it. It checks that Python
 * is initialised, waits for the GIL like any other thread and runs the bootstrap script that sits
 * beside this file (same path, ".py" instead of ".so"), in a fresh namespace, never __main__'s.
 *
 * No libpython or libpthread link: every Python and pthread symbol is looked up in the target with
 * dlsym(RTLD_DEFAULT) (pthread_create lives in libpthread before glibc 2.34, in libc after), so
 * one build serves CPython 3.8 to 3.13. The few libc symbols linked directly are pinned to their
 * oldest versions so the library loads in targets built against an older glibc (tests check it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
__asm__(".symver dladdr,dladdr@GLIBC_2.2.5");
__asm__(".symver memcpy,memcpy@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
__asm__(".symver dladdr,dladdr@GLIBC_2.17");
#endif

/* The agent's first thread: deep views and expressions run on threads of this size (the agent
 * starts its other threads with the same size; see agent/server.py STACK_BYTES). */
#define STACK_BYTES (16u << 20)

typedef void *PyObj;
typedef int (*fn_int_void)(void);
typedef int (*fn_gil_ensure)(void);
typedef void (*fn_gil_release)(int);
typedef PyObj (*fn_dict_new)(void);
typedef int (*fn_dict_set)(PyObj, const char *, PyObj);
typedef PyObj (*fn_import)(const char *);
typedef PyObj (*fn_run)(const char *, int, PyObj, PyObj, void *);
typedef void (*fn_void_void)(void);
typedef void (*fn_decref)(PyObj);
typedef int (*fn_attr)(pthread_attr_t *);
typedef int (*fn_attr_size)(pthread_attr_t *, size_t);
typedef int (*fn_attr_int)(pthread_attr_t *, int);
typedef int (*fn_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

#define PY_FILE_INPUT 257

static char script_path[4096];

static void *sym(const char *name) { return dlsym(RTLD_DEFAULT, name); }

static void *run_bootstrap(void *unused) {
    (void)unused;
    fn_int_void initialized = (fn_int_void)sym("Py_IsInitialized");
    fn_gil_ensure ensure = (fn_gil_ensure)sym("PyGILState_Ensure");
    fn_gil_release release = (fn_gil_release)sym("PyGILState_Release");
    fn_dict_new dict_new = (fn_dict_new)sym("PyDict_New");
    fn_dict_set dict_set = (fn_dict_set)sym("PyDict_SetItemString");
    fn_import import = (fn_import)sym("PyImport_ImportModule");
    fn_run run = (fn_run)sym("PyRun_StringFlags");
    fn_void_void err_clear = (fn_void_void)sym("PyErr_Clear");
    fn_decref decref = (fn_decref)sym("Py_DecRef");
    if (!initialized || !ensure || !release || !dict_new || !dict_set || !import || !run || !err_clear ||
        !decref || !initialized())
        return NULL;

    /* The bootstrap reads its own file; the path is all we pass in. */
    static const char head[] = "__flight_mcp_bootstrap__ = ";
    static const char tail[] =
        "\nexec(compile(open(__flight_mcp_bootstrap__, 'rb').read(),"
        " __flight_mcp_bootstrap__, 'exec'), globals())\n";
    size_t n = strlen(script_path);
    char *code = malloc(sizeof head + n + 2 + sizeof tail);
    if (!code)
        return NULL;
    char *p = code;
    memcpy(p, head, sizeof head - 1); p += sizeof head - 1;
    *p++ = '\'';
    memcpy(p, script_path, n); p += n; /* path has no quotes: we chose it */
    *p++ = '\'';
    memcpy(p, tail, sizeof tail);

    int state = ensure();
    PyObj globals = dict_new();
    PyObj builtins = import("builtins");
    if (globals && builtins && dict_set(globals, "__builtins__", builtins) == 0) {
        PyObj res = run(code, PY_FILE_INPUT, globals, globals, NULL);
        /* Never PyErr_Print: it would turn a SystemExit into the target's exit. */
        if (res) decref(res); else err_clear();
    } else {
        err_clear();
    }
    if (builtins) decref(builtins);
    if (globals) decref(globals);
    release(state);
    free(code);
    return NULL;
}

/* Runs under the loader lock: no Python call here, not even Py_IsInitialized. */
__attribute__((constructor)) static void flight_payload_init(void) {
    Dl_info info;
    if (!dladdr((void *)flight_payload_init, &info) || !info.dli_fname)
        return;
    size_t n = strlen(info.dli_fname);
    if (n < 4 || n + 1 > sizeof script_path || strchr(info.dli_fname, '\''))
        return;
    memcpy(script_path, info.dli_fname, n + 1);
    memcpy(script_path + n - 3, ".py", 4); /* "x.so" -> "x.py" */
    fn_attr attr_init = (fn_attr)sym("pthread_attr_init");
    fn_attr attr_destroy = (fn_attr)sym("pthread_attr_destroy");
    fn_attr_size set_stack = (fn_attr_size)sym("pthread_attr_setstacksize");
    fn_attr_int set_detach = (fn_attr_int)sym("pthread_attr_setdetachstate");
    fn_create create = (fn_create)sym("pthread_create");
    pthread_attr_t attr;
    pthread_t thread;
    if (!attr_init || !attr_destroy || !set_stack || !set_detach || !create || attr_init(&attr) != 0)
        return;
    if (set_stack(&attr, STACK_BYTES) == 0 && set_detach(&attr, PTHREAD_CREATE_DETACHED) == 0)
        create(&thread, &attr, run_bootstrap, NULL);
    attr_destroy(&attr);
}
