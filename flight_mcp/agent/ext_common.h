/* What the agent's C extensions (hook.c, recorder.c) share: the stable ABI of the oldest target
 * (one build loads into every Python >= 3.8), and dlsym pinned to its oldest version, so that a
 * build on a new glibc (dlsym@GLIBC_2.34) still loads into a target on an old one (the payload
 * pins the same). */
#ifndef FLIGHT_MCP_EXT_COMMON_H
#define FLIGHT_MCP_EXT_COMMON_H
#define Py_LIMITED_API 0x03080000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* glibc 2.34 moved libpthread into libc and gave these symbols a new version; their old versions
 * are the same functions. A pin on a symbol a file does not use adds nothing to it. The floor
 * (glibc 2.17) is checked by tests/test_packaging.py. */
#if defined(__x86_64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.2.5");
__asm__(".symver pthread_attr_setstacksize,pthread_attr_setstacksize@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
__asm__(".symver pthread_create,pthread_create@GLIBC_2.17");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.17");
__asm__(".symver pthread_attr_setstacksize,pthread_attr_setstacksize@GLIBC_2.17");
#endif
#endif
