/* One edge-v1 call on wasmtime in C (`wasmtime_engine._EdgeInstance`): `alloc`, the
   request copied in, `handle`, the response copied out, `dealloc`, through
   wasmtime's C API, with the GIL released around each guest call as ctypes
   releases it. The same steps as `program.EdgeProgram.invoke`'s hooks, without a
   ctypes call, a struct and a memory lookup per step, the call's deadline armed
   and ended around them (`_epochtick.c`'s slot).

   The happy path only: at the first step that fails it returns where it stopped
   and what it had (the error, the trap, the pointer), and Python goes on from
   there with the hooks of record (`_EdgeInstance._resume`): the error turned into
   an `InvocationError`, the buffer handed back when the instance is kept.

   The guest's memory is read and written only inside [0, size) as wasmtime gives
   it after each call (a call may grow it), in 64-bit arithmetic on the guest's
   32-bit pointers. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* wasmtime's C API, as far as it is used here (wasmtime/func.h, wasmtime/memory.h). */
typedef struct {
    union {
        int32_t i32;
        int64_t i64;
        uint8_t bytes[16];
    } of;
} raw_t; /* wasmtime_val_raw_t: 16 bytes, the i32 first */
typedef void *(*call_unchecked_t)(void *ctx, const void *func, raw_t *args, size_t n,
                                  void **trap);
typedef uint8_t *(*memory_data_t)(const void *ctx, const void *memory);
typedef size_t (*memory_size_t)(const void *ctx, const void *memory);

static call_unchecked_t call_unchecked;
static memory_data_t memory_data;
static memory_size_t memory_size;

/* Where the call stopped (`wasmtime_engine._EdgeInstance._resume`). */
enum { ALLOC = 1, UNUSABLE = 2, HANDLE = 3, RESULT = 4, OUTSIDE = 5, DEALLOC = 6 };

/* An instance's plan: what `_EdgeInstance` packs once. */
typedef struct {
    void *ctx;
    const void *memory;
    const void *alloc;
    const void *handle;
    const void *dealloc; /* NULL: the module exports none */
    /* The store's deadline (`_epochtick.c`): armed before `alloc`, ended on return. */
    void (*arm)(void *slot, int64_t ms);
    void (*end)(void *slot);
    void *slot;
    int64_t ms;
} plan_t;

static int call(const plan_t *p, const void *func, raw_t *args, size_t n, void **err,
                void **trap) {
    Py_BEGIN_ALLOW_THREADS
    *err = call_unchecked(p->ctx, func, args, n, trap);
    Py_END_ALLOW_THREADS
    return *err == NULL && *trap == NULL;
}

static PyObject *stopped(int stage, int32_t ptr, int32_t value, void *err, void *trap) {
    return Py_BuildValue("(iiiKK)", stage, ptr, value, (unsigned long long)(uintptr_t)err,
                         (unsigned long long)(uintptr_t)trap);
}

PyDoc_STRVAR(configure_doc,
"configure(call_unchecked, memory_data, memory_data_size)\n\n"
"The addresses of wasmtime's functions, from the library wasmtime-py loaded.");

static PyObject *configure(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, b, c;
    if (!PyArg_ParseTuple(args, "KKK", &a, &b, &c)) return NULL;
    call_unchecked = (call_unchecked_t)(uintptr_t)a;
    memory_data = (memory_data_t)(uintptr_t)b;
    memory_size = (memory_size_t)(uintptr_t)c;
    Py_RETURN_NONE;
}

static PyObject *call_steps(const plan_t *pp, const char *part[4], const Py_ssize_t len[4],
                            uint64_t total, long long cap, int *armed);

PyDoc_STRVAR(exchange_doc,
"exchange(plan, method, path, headers, body, cap)\n"
"    -> bytes | (stage, ptr, written, err, trap) | None\n\n"
"The guest's response, or where the call stopped: `alloc`'s pointer, `handle`'s\n"
"result (RESULT), wasmtime's error and trap (ALLOC, HANDLE, DEALLOC); None, before\n"
"any call, for sizes `alloc` cannot take.");

static PyObject *exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6 || !PyBytes_Check(args[0])
            || PyBytes_GET_SIZE(args[0]) != (Py_ssize_t)sizeof(plan_t)) {
        PyErr_SetString(PyExc_TypeError, "exchange(plan, method, path, headers, body, cap)");
        return NULL;
    }
    if (call_unchecked == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    plan_t p;
    memcpy(&p, PyBytes_AS_STRING(args[0]), sizeof p);
    if (p.ctx == NULL || p.memory == NULL || p.alloc == NULL || p.handle == NULL
            || p.arm == NULL || p.end == NULL || p.slot == NULL) {
        PyErr_SetString(PyExc_ValueError, "an incomplete plan");
        return NULL;
    }
    const char *part[4];
    Py_ssize_t len[4];
    uint64_t inputs = 0;
    for (int i = 0; i < 4; i++) {
        if (!PyBytes_Check(args[1 + i])) {
            PyErr_SetString(PyExc_TypeError, "the request's parts are bytes");
            return NULL;
        }
        part[i] = PyBytes_AS_STRING(args[1 + i]);
        len[i] = PyBytes_GET_SIZE(args[1 + i]);
        inputs += (uint64_t)len[i];
    }
    long long cap = PyLong_AsLongLong(args[5]);
    if (cap == -1 && PyErr_Occurred()) return NULL;
    uint64_t total = inputs + (uint64_t)cap;
    if (cap < 0 || total > INT32_MAX) Py_RETURN_NONE; /* `alloc` takes an i32: the hooks say why */

    p.arm(p.slot, p.ms);
    int armed = 0;
    PyObject *result = call_steps(&p, part, len, total, cap, &armed);
    if (!armed) p.end(p.slot);
    return result;
}

/* `exchange`'s steps, under the deadline it armed. `*armed`: where it stopped after
   `handle` (HANDLE, RESULT, OUTSIDE), the deadline is left armed: Python may hand the
   buffer back with another guest call, and ends it (`_EdgeInstance._resume`). */
static PyObject *call_steps(const plan_t *pp, const char *part[4], const Py_ssize_t len[4],
                            uint64_t total, long long cap, int *armed) {
    const plan_t p = *pp;
    raw_t a[10];
    void *err = NULL, *trap = NULL;
    memset(a, 0, sizeof a);
    a[0].of.i32 = (int32_t)total;
    if (!call(&p, p.alloc, a, 1, &err, &trap)) return stopped(ALLOC, 0, 0, err, trap);
    int32_t ptr = a[0].of.i32;

    uint64_t size = memory_size(p.ctx, p.memory);
    if (ptr <= 0 || (uint64_t)ptr + total > size) return stopped(UNUSABLE, ptr, 0, NULL, NULL);
    uint8_t *base = memory_data(p.ctx, p.memory);
    uint64_t at = (uint64_t)ptr;
    memset(a, 0, sizeof a);
    for (int i = 0; i < 4; i++) {
        memcpy(base + at, part[i], (size_t)len[i]);
        a[2 * i].of.i32 = (int32_t)at;
        a[2 * i + 1].of.i32 = (int32_t)len[i];
        at += (uint64_t)len[i];
    }
    a[8].of.i32 = (int32_t)at; /* the response buffer, after the inputs */
    a[9].of.i32 = (int32_t)cap;
    *armed = 1;
    if (!call(&p, p.handle, a, 10, &err, &trap)) return stopped(HANDLE, ptr, 0, err, trap);
    int32_t written = a[0].of.i32;
    if (written < 0 || written > cap) return stopped(RESULT, ptr, written, NULL, NULL);

    /* `handle` may have grown (and so moved) the memory. */
    size = memory_size(p.ctx, p.memory);
    if (at + (uint64_t)written > size) return stopped(OUTSIDE, ptr, 0, NULL, NULL);
    *armed = 0;
    PyObject *response = PyBytes_FromStringAndSize(
        (const char *)memory_data(p.ctx, p.memory) + at, written);
    if (response == NULL) return NULL;

    if (p.dealloc != NULL) {
        memset(a, 0, sizeof a);
        a[0].of.i32 = ptr;
        a[1].of.i32 = (int32_t)total;
        if (!call(&p, p.dealloc, a, 2, &err, &trap)) {
            Py_DECREF(response);
            return stopped(DEALLOC, ptr, 0, err, trap);
        }
    }
    return response;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"exchange", (PyCFunction)(void (*)(void))exchange, METH_FASTCALL, exchange_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.sandbox._edgecall",
    "One edge-v1 call on wasmtime in C (wasmtime_engine.py's fast path).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__edgecall(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "ALLOC", ALLOC) < 0
            || PyModule_AddIntConstant(m, "UNUSABLE", UNUSABLE) < 0
            || PyModule_AddIntConstant(m, "HANDLE", HANDLE) < 0
            || PyModule_AddIntConstant(m, "RESULT", RESULT) < 0
            || PyModule_AddIntConstant(m, "OUTSIDE", OUTSIDE) < 0
            || PyModule_AddIntConstant(m, "DEALLOC", DEALLOC) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
