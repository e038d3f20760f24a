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
   32-bit pointers.

   Its setup half makes an edge-v1 instance's store and instance (`open_store`,
   `instantiate`): the store with its limiter, its WASI (output to the instance's
   callbacks, nothing else) and its deadline, armed; the instance, driven until it
   is made or a waiting host call suspends it; and the exports the ABI uses, looked
   up by name. The same steps as `WasmtimeModule.new_store` and
   `_BaseInstance._instantiate`, without their ctypes calls and objects; Python
   registers the instance between the two (a host call during instantiation finds
   it by its context) and goes on from where `instantiate` stopped.

   The same five steps run on WasmEdge too (`wasmedge_exchange`, for
   `wasmedge_engine._EdgeInstance`), each a `WasmEdge_ExecutorInvoke`: `steps` is
   written once over an engine's call and memory (`engine_t`). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
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

/* What `steps` needs of an engine: a call of one of the guest's functions with i32
   arguments, and its memory as it is now. `call` returns 1 when it succeeded (its i32
   result in `*ret` when `nresults`), else 0 with what Python needs to raise the failure
   in `why` (wasmtime's error and trap; WasmEdge's result code). */
typedef struct {
    int (*call)(const void *plan, const void *func, const int32_t *v, int n, int nresults,
                int32_t *ret, uint64_t why[2]);
    uint64_t (*memory)(const void *plan, uint8_t **base);
} engine_t;

static PyObject *stopped(int stage, int32_t ptr, int32_t value, const uint64_t why[2]) {
    return Py_BuildValue("(iiiKK)", stage, ptr, value, (unsigned long long)why[0],
                         (unsigned long long)why[1]);
}

static int wasmtime_call(const void *plan, const void *func, const int32_t *v, int n,
                         int nresults, int32_t *ret, uint64_t why[2]) {
    const plan_t *p = plan;
    raw_t a[10];
    memset(a, 0, sizeof a);
    for (int i = 0; i < n; i++) a[i].of.i32 = v[i];
    void *err, *trap = NULL;
    Py_BEGIN_ALLOW_THREADS
    err = call_unchecked(p->ctx, func, a, (size_t)(n > nresults ? n : nresults), &trap);
    Py_END_ALLOW_THREADS
    if (err != NULL || trap != NULL) {
        why[0] = (uint64_t)(uintptr_t)err;
        why[1] = (uint64_t)(uintptr_t)trap;
        return 0;
    }
    if (nresults) *ret = a[0].of.i32;
    return 1;
}

static uint64_t wasmtime_memory(const void *plan, uint8_t **base) {
    const plan_t *p = plan;
    *base = memory_data(p->ctx, p->memory);
    return memory_size(p->ctx, p->memory);
}

static const engine_t WASMTIME = {wasmtime_call, wasmtime_memory};

/* The `configure` functions' arguments: `want` addresses, none null, into `out`;
   0, or -1 with the error set. */
static int read_addresses(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                          const char *name, void **out) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %d addresses", name, (int)want);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        unsigned long long a = PyLong_AsUnsignedLongLong(args[i]);
        if (a == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        if (a == 0) {
            PyErr_Format(PyExc_ValueError, "address %d is null", (int)i);
            return -1;
        }
        out[i] = (void *)(uintptr_t)a;
    }
    return 0;
}

/* A call's plan (its argument 0, `size` bytes) copied to `plan`, once the functions
   it calls are configured; 0, or -1 with the error set (`usage`: the TypeError's).
   The caller checks it is complete (`incomplete`). */
static int read_plan(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                     const char *usage, int configured, void *plan, size_t size) {
    if (nargs != want || !PyBytes_Check(args[0])
            || PyBytes_GET_SIZE(args[0]) != (Py_ssize_t)size) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "the module's functions were not configured");
        return -1;
    }
    memcpy(plan, PyBytes_AS_STRING(args[0]), size);
    return 0;
}

static PyObject *incomplete(void) {
    PyErr_SetString(PyExc_ValueError, "an incomplete plan");
    return NULL;
}

PyDoc_STRVAR(configure_doc,
"configure(call_unchecked, memory_data, memory_data_size)\n\n"
"The addresses of wasmtime's functions, from the library wasmtime-py loaded.");

static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *got[3];
    if (read_addresses(args, nargs, 3, "configure", got) < 0) return NULL;
    call_unchecked = (call_unchecked_t)(uintptr_t)got[0];
    memory_data = (memory_data_t)(uintptr_t)got[1];
    memory_size = (memory_size_t)(uintptr_t)got[2];
    Py_RETURN_NONE;
}

/* A request as `exchange` and `start` take it (their arguments 1 to 5): its four
   parts, the response's cap, and what `alloc` is asked for, all of them together. */
typedef struct {
    const char *part[4];
    Py_ssize_t len[4];
    long long cap;
    uint64_t total;
} request_t;

/* 1 read; 0 sizes `alloc` cannot take (an i32); -1 with the error set. */
static int read_request(PyObject *const *args, request_t *r) {
    uint64_t inputs = 0;
    for (int i = 0; i < 4; i++) {
        if (!PyBytes_Check(args[1 + i])) {
            PyErr_SetString(PyExc_TypeError, "the request's parts are bytes");
            return -1;
        }
        r->part[i] = PyBytes_AS_STRING(args[1 + i]);
        r->len[i] = PyBytes_GET_SIZE(args[1 + i]);
        inputs += (uint64_t)r->len[i];
    }
    r->cap = PyLong_AsLongLong(args[5]);
    if (r->cap == -1 && PyErr_Occurred()) return -1;
    r->total = inputs + (uint64_t)r->cap;
    return r->cap >= 0 && r->total <= INT32_MAX;
}

/* The parts copied back to back at `ptr` and `handle`'s ten i32 arguments staged in
   `v`; returns where the response goes, or 0 (nothing written) when `ptr` is not a
   buffer of `total` bytes inside the `size` bytes of memory at `base`. */
static uint64_t copy_in(uint8_t *base, uint64_t size, int32_t ptr, const request_t *r,
                        int32_t v[10]) {
    if (ptr <= 0 || (uint64_t)ptr + r->total > size) return 0;
    uint64_t at = (uint64_t)ptr;
    for (int i = 0; i < 4; i++) {
        memcpy(base + at, r->part[i], (size_t)r->len[i]);
        v[2 * i] = (int32_t)at;
        v[2 * i + 1] = (int32_t)r->len[i];
        at += (uint64_t)r->len[i];
    }
    v[8] = (int32_t)at; /* the response buffer, after the inputs */
    v[9] = (int32_t)r->cap;
    return at;
}

static PyObject *steps(const engine_t *e, const void *plan, const void *const fns[3],
                       const request_t *r, int *armed);

PyDoc_STRVAR(exchange_doc,
"exchange(plan, method, path, headers, body, cap)\n"
"    -> bytes | (stage, ptr, written, err, trap) | None\n\n"
"The guest's response, or where the call stopped: `alloc`'s pointer, `handle`'s\n"
"result (RESULT), wasmtime's error and trap (ALLOC, HANDLE, DEALLOC); None, before\n"
"any call, for sizes `alloc` cannot take.");

static PyObject *exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    plan_t p;
    if (read_plan(args, nargs, 6, "exchange(plan, method, path, headers, body, cap)",
                  call_unchecked != NULL, &p, sizeof p) < 0)
        return NULL;
    if (p.ctx == NULL || p.memory == NULL || p.alloc == NULL || p.handle == NULL
            || p.arm == NULL || p.end == NULL || p.slot == NULL)
        return incomplete();
    request_t r;
    int readable = read_request(args, &r);
    if (readable < 0) return NULL;
    if (readable == 0) Py_RETURN_NONE; /* `alloc` takes an i32: the hooks say why */

    p.arm(p.slot, p.ms);
    int armed = 0;
    const void *const fns[3] = {p.alloc, p.handle, p.dealloc};
    PyObject *result = steps(&WASMTIME, &p, fns, &r, &armed);
    if (!armed) p.end(p.slot);
    return result;
}

/* The five steps of an edge-v1 call on engine `e`: `fns` are `alloc`, `handle` and
   `dealloc` (NULL: none). `*armed`: where it stopped after `handle` (HANDLE, RESULT,
   OUTSIDE), the call's deadline is left armed: Python may hand the buffer back with
   another guest call, and ends it (`_EdgeInstance._resume`). */
static PyObject *steps(const engine_t *e, const void *plan, const void *const fns[3],
                       const request_t *r, int *armed) {
    uint64_t why[2] = {0, 0};
    int32_t v[10], ptr, written;
    v[0] = (int32_t)r->total;
    if (!e->call(plan, fns[0], v, 1, 1, &ptr, why)) return stopped(ALLOC, 0, 0, why);

    uint8_t *base;
    uint64_t size = e->memory(plan, &base);
    uint64_t at = copy_in(base, size, ptr, r, v);
    if (at == 0) return stopped(UNUSABLE, ptr, 0, why);
    *armed = 1;
    if (!e->call(plan, fns[1], v, 10, 1, &written, why)) return stopped(HANDLE, ptr, 0, why);
    if (written < 0 || written > r->cap) return stopped(RESULT, ptr, written, why);

    size = e->memory(plan, &base); /* `handle` may have grown (and so moved) the memory */
    if (at + (uint64_t)written > size) return stopped(OUTSIDE, ptr, 0, why);
    *armed = 0;
    PyObject *response = PyBytes_FromStringAndSize((const char *)base + at, written);
    if (response == NULL) return NULL;

    if (fns[2] != NULL) {
        v[0] = ptr;
        v[1] = (int32_t)r->total;
        if (!e->call(plan, fns[2], v, 2, 0, NULL, why)) {
            Py_DECREF(response);
            return stopped(DEALLOC, ptr, 0, why);
        }
    }
    return response;
}

/* -- the setup half ------------------------------------------------------------- */
/* wasmtime's C API for stores, WASI and instances (wasmtime/store.h, wasi.h,
   wasmtime/instance.h, wasmtime/async.h), and `_epochtick.c`'s slots. */
typedef void *(*store_new_t)(void *engine, void *data, void *finalizer);
typedef void *(*store_context_t)(void *store);
typedef void (*store_limiter_t)(void *store, int64_t memory, int64_t table_elements,
                                int64_t instances, int64_t tables, int64_t memories);
typedef void *(*wasi_config_new_t)(void);
typedef void (*wasi_custom_t)(void *config, void *callback, void *data, void *finalizer);
typedef void *(*set_wasi_t)(void *ctx, void *config);
typedef void (*deadline_callback_t)(void *store, void *callback, void *data, void *finalizer);
typedef void (*store_delete_t)(void *store);
typedef void *(*pre_instantiate_t)(const void *pre, void *ctx, void *instance, void **trap);
typedef void *(*pre_instantiate_async_t)(const void *pre, void *ctx, void *instance,
                                         void **trap, void **err);
typedef bool (*future_poll_t)(void *future);
typedef void (*future_delete_t)(void *future);
typedef bool (*export_get_t)(void *ctx, const void *instance, const char *name, size_t len,
                             void *item);
typedef void *(*call_async_t)(void *ctx, const void *func, const void *args, size_t nargs,
                              void *results, size_t nresults, void **trap, void **err);
typedef void *(*slot_new_t)(void *ticker);
typedef void (*slot_arm_t)(void *slot, int64_t ms);

static struct {
    store_new_t store_new;
    store_context_t store_context;
    store_limiter_t store_limiter;
    wasi_config_new_t wasi_config_new;
    wasi_custom_t set_stdout, set_stderr;
    set_wasi_t set_wasi;
    deadline_callback_t set_deadline_callback;
    store_delete_t store_delete;
    pre_instantiate_t pre_instantiate;
    pre_instantiate_async_t pre_instantiate_async;
    future_poll_t poll;
    future_delete_t future_delete;
    export_get_t export_get;
    call_async_t call_async;
    slot_new_t slot_new;
    void *deadline_callback, *slot_free; /* handed to wasmtime, not called here */
    slot_arm_t slot_arm;
} api;

#define API_FUNCTIONS (sizeof api / sizeof(void *))

/* An async call's or instantiation's future polled once, the GIL released while its
   guest runs; deleted when done. */
static bool poll_future(void *future) {
    bool done;
    Py_BEGIN_ALLOW_THREADS
    done = api.poll(future);
    Py_END_ALLOW_THREADS
    if (done) api.future_delete(future);
    return done;
}

PyDoc_STRVAR(configure_setup_doc,
"configure_setup(*addresses)\n\n"
"The addresses of the functions the setup half calls, in the order of `SETUP_FUNCTIONS`.");

static PyObject *configure_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *got[API_FUNCTIONS];
    if (read_addresses(args, nargs, API_FUNCTIONS, "configure_setup", got) < 0) return NULL;
    memcpy(&api, got, sizeof api);
    Py_RETURN_NONE;
}

/* A module's store spec: what `WasmtimeModule` packs once. */
typedef struct {
    void *engine;
    void *ticker; /* `_epochtick.c`'s deadline thread */
    void *stdout_cb, *stderr_cb;
    int64_t memory_bytes;
    int64_t table_elements;
    int64_t ms; /* max_execution_ms */
} store_spec_t;

PyDoc_STRVAR(open_store_doc,
"open_store(spec) -> (store, context, slot) | (0, error, 0)\n\n"
"A store for one instance: its limiter, a WASI with the guest's output going to the\n"
"output callbacks (their data the store's context) and nothing else, and its\n"
"deadline slot, armed. On wasmtime's error, the error's address (the store deleted).");

static PyObject *open_store(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    store_spec_t sp;
    if (read_plan(args, nargs, 1, "open_store(spec)", api.store_new != NULL, &sp, sizeof sp) < 0)
        return NULL;
    if (sp.engine == NULL || sp.ticker == NULL || sp.stdout_cb == NULL || sp.stderr_cb == NULL) {
        PyErr_SetString(PyExc_ValueError, "an incomplete store spec");
        return NULL;
    }
    void *slot = api.slot_new(sp.ticker);
    if (slot == NULL) return PyErr_NoMemory();
    void *store = api.store_new(sp.engine, NULL, NULL);
    if (store == NULL) {
        /* Not yet the store's: freed here. */
        ((void (*)(void *))api.slot_free)(slot);
        return PyErr_NoMemory();
    }
    /* From here the slot is the store's, freed with it. */
    api.set_deadline_callback(store, api.deadline_callback, slot, api.slot_free);
    void *ctx = api.store_context(store);
    api.slot_arm(slot, sp.ms); /* instantiating may run guest code */
    api.store_limiter(store, sp.memory_bytes, sp.table_elements, 1, 1, 1);
    void *config = api.wasi_config_new();
    if (config == NULL) {
        api.store_delete(store);
        return PyErr_NoMemory();
    }
    api.set_stdout(config, sp.stdout_cb, ctx, NULL);
    api.set_stderr(config, sp.stderr_cb, ctx, NULL);
    void *err = api.set_wasi(ctx, config); /* takes the config, whatever it returns */
    if (err != NULL) {
        api.store_delete(store);
        return Py_BuildValue("(KKK)", 0ULL, (unsigned long long)(uintptr_t)err, 0ULL);
    }
    return Py_BuildValue("(KKK)", (unsigned long long)(uintptr_t)store,
                         (unsigned long long)(uintptr_t)ctx, (unsigned long long)(uintptr_t)slot);
}

/* The exports an edge-v1 instance uses, in `instantiate`'s order. */
static const char *const EXPORTS[] = {"memory", "alloc", "handle", "dealloc", "_initialize"};
#define N_EXPORTS (sizeof EXPORTS / sizeof EXPORTS[0])

/* Where `instantiate` stopped. */
enum { MADE = 20, NOT_MADE = 21, INSTANTIATING = 22, INIT_FAILED = 23, INITIALIZING = 24 };
#define INITIALIZE 4 /* `_initialize`'s index in EXPORTS */

PyDoc_STRVAR(instantiate_doc,
"instantiate(pre, context, suspends, instance, trap, error, externs, extern_size,\n"
"            extern_of, func_kind, slot, ms) -> (stage, future, error, found)\n\n"
"Instantiate `pre` in the store of `context` into the `wasmtime_instance_t` at\n"
"`instance`, the GIL released while guest code may run: synchronously, or\n"
"(`suspends`) as futures polled once. `trap` and `error` are the addresses of the\n"
"slots wasmtime writes a trap and (async; 0 otherwise) an error to. Once made, the\n"
"exports memory, alloc, handle, dealloc and _initialize are looked up into the array\n"
"of `wasmtime_extern_t` at `externs` (`extern_size` bytes each, their union at\n"
"`extern_of`); `found` has bit i set for each found. A found `_initialize` of kind\n"
"`func_kind` is then called under the deadline `slot` armed for `ms`, and its bit\n"
"cleared. `stage`: MADE; NOT_MADE (`error`: the synchronous call's, else in the\n"
"slots); INSTANTIATING (`future`: a waiting host call suspended the instantiation,\n"
"for Python to drive and delete; nothing looked up); INIT_FAILED (`_initialize`\n"
"failed: `error`, or the slots); INITIALIZING (`future`: `_initialize` suspended).");

static PyObject *instantiate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError,
                        "instantiate(pre, context, suspends, instance, trap, error, externs, "
                        "extern_size, extern_of, func_kind, slot, ms)");
        return NULL;
    }
    if (api.pre_instantiate == NULL || call_unchecked == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() and configure_setup() were not called");
        return NULL;
    }
    unsigned long long a[12];
    for (int i = 0; i < 12; i++) {
        a[i] = PyLong_AsUnsignedLongLong(args[i]);
        if (a[i] == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    }
    for (int i = 0; i < 12; i++) {
        /* flags, offsets and sizes may be 0; the error slot is only an async call's */
        if (a[i] == 0 && i != 2 && i != 8 && i != 9 && i != 11 && !(i == 5 && a[2] == 0)) {
            PyErr_Format(PyExc_ValueError, "argument %d is null", i);
            return NULL;
        }
    }
    const void *pre = (const void *)(uintptr_t)a[0];
    void *ctx = (void *)(uintptr_t)a[1];
    int suspends = a[2] != 0;
    void *instance = (void *)(uintptr_t)a[3];
    void **trap = (void **)(uintptr_t)a[4];
    void **error = (void **)(uintptr_t)a[5];
    uint8_t *externs = (uint8_t *)(uintptr_t)a[6];
    size_t extern_size = (size_t)a[7], extern_of = (size_t)a[8];
    uint8_t func_kind = (uint8_t)a[9];
    void *slot = (void *)(uintptr_t)a[10];
    int64_t ms = (int64_t)a[11];
    if (extern_of + 16 > extern_size) {
        PyErr_SetString(PyExc_ValueError, "wasmtime_extern_t is smaller than its union");
        return NULL;
    }

    void *err = NULL;
    if (suspends) {
        void *future = api.pre_instantiate_async(pre, ctx, instance, trap, error);
        if (future == NULL) return PyErr_NoMemory();
        if (!poll_future(future))
            return Py_BuildValue("(iKKi)", INSTANTIATING, (unsigned long long)(uintptr_t)future,
                                 0ULL, 0);
        if (*error != NULL || *trap != NULL)
            return Py_BuildValue("(iKKi)", NOT_MADE, 0ULL, 0ULL, 0);
    } else {
        Py_BEGIN_ALLOW_THREADS
        err = api.pre_instantiate(pre, ctx, instance, trap);
        Py_END_ALLOW_THREADS
        if (err != NULL || *trap != NULL)
            return Py_BuildValue("(iKKi)", NOT_MADE, 0ULL, (unsigned long long)(uintptr_t)err, 0);
    }
    int found = 0;
    for (size_t i = 0; i < N_EXPORTS; i++)
        if (api.export_get(ctx, instance, EXPORTS[i], strlen(EXPORTS[i]),
                           externs + i * extern_size))
            found |= 1 << i;

    /* A WASI reactor's constructors, as `EdgeProgram._create` runs them. */
    uint8_t *init = externs + INITIALIZE * extern_size;
    if (!(found >> INITIALIZE & 1) || init[0] != func_kind)
        return Py_BuildValue("(iKKi)", MADE, 0ULL, 0ULL, found);
    found &= ~(1 << INITIALIZE);
    const void *func = init + extern_of;
    /* No arguments, no results: wasmtime neither reads nor writes it, and an async
       call may keep the pointers until its future is deleted, after this returns. */
    static raw_t none[1];
    api.slot_arm(slot, ms);
    if (suspends) {
        void *future = api.call_async(ctx, func, none, 0, none, 0, trap, error);
        if (future == NULL) return PyErr_NoMemory();
        if (!poll_future(future))
            return Py_BuildValue("(iKKi)", INITIALIZING, (unsigned long long)(uintptr_t)future,
                                 0ULL, found);
        int failed = *error != NULL || *trap != NULL;
        return Py_BuildValue("(iKKi)", failed ? INIT_FAILED : MADE, 0ULL, 0ULL, found);
    }
    Py_BEGIN_ALLOW_THREADS
    err = call_unchecked(ctx, func, none, 0, trap);
    Py_END_ALLOW_THREADS
    int failed = err != NULL || *trap != NULL;
    return Py_BuildValue("(iKKi)", failed ? INIT_FAILED : MADE, 0ULL,
                         (unsigned long long)(uintptr_t)err, found);
}

/* -- a suspending instance's call, up to its guest's first wait ------------------- */
/* For an instance whose guest may be suspended in a waiting host call (its calls are
   wasmtime async calls, each a future polled until done): `alloc`, the request copied
   in, and `handle` polled once, which is where such a guest usually waits. Python
   goes on from there (`_SuspendingEdgeInstance._enter`, `_call_handle`): it runs the
   waiting call, resumes the guest, and reads the response with the hooks of record.
   The call's deadline is Python's to arm and end (`EdgeProgram._exchange`). */
typedef struct {
    void *ctx;
    const void *memory;
    const void *alloc;
    const void *handle;
    const void *dealloc; /* NULL: the module exports none */
    uint8_t *values;  /* wasmtime_val_t[10], the arguments */
    uint8_t *results; /* wasmtime_val_t[1] */
    void **trap;      /* the instance's trap and error slots */
    void **error;
    int64_t val_size;  /* sizeof(wasmtime_val_t) */
    int64_t of_offset; /* where its union starts */
    int64_t i32_kind;  /* WASMTIME_I32 */
} async_plan_t;

/* Where `start` and `answer` stopped, beyond `exchange`'s stages. */
enum { SUSPENDED = 7, HANDLED = 8, ALLOC_SUSPENDED = 9, DEALLOC_SUSPENDED = 10 };

/* Stage `n` i32 arguments as typed values (the kind, then the i32 where the union starts). */
static void typed_i32s(const async_plan_t *p, const int32_t *v, int n) {
    memset(p->values, 0, (size_t)(n * p->val_size));
    for (int i = 0; i < n; i++) {
        uint8_t *at = p->values + i * p->val_size;
        at[0] = (uint8_t)p->i32_kind;
        memcpy(at + p->of_offset, &v[i], sizeof(int32_t));
    }
}

/* One async call polled once: 1 done (the future deleted), 0 suspended (`*future`),
   -1 not made. */
static int poll_once(const async_plan_t *p, const void *func, int nargs, int nresults,
                     void **future) {
    *future = api.call_async(p->ctx, func, p->values, (size_t)nargs, p->results,
                             (size_t)nresults, p->trap, p->error);
    if (*future == NULL) return -1;
    if (!poll_future(*future)) return 0;
    *future = NULL;
    return 1;
}

static int32_t result_i32(const async_plan_t *p) {
    int32_t v;
    memcpy(&v, p->results + p->of_offset, sizeof v);
    return v;
}

/* (stage, value, ptr, offset, error, trap); the error and trap taken from their slots. */
static PyObject *started(const async_plan_t *p, int stage, long long value, int32_t ptr,
                         int64_t offset) {
    void *err = *p->error, *trap = *p->trap;
    if (stage == ALLOC || stage == HANDLE) *p->error = *p->trap = NULL;
    else err = trap = NULL;
    return Py_BuildValue("(iLiLKK)", stage, value, ptr,
                         (long long)offset, (unsigned long long)(uintptr_t)err,
                         (unsigned long long)(uintptr_t)trap);
}

PyDoc_STRVAR(start_doc,
"start(plan, method, path, headers, body, cap)\n"
"    -> (stage, value, ptr, offset, err, trap) | None\n\n"
"A suspending instance's call up to its guest's first wait, under the deadline\n"
"Python armed: "
"SUSPENDED (`value`: handle's future, for Python to drive and delete), HANDLED\n"
"(`value`: what handle returned), ALLOC_SUSPENDED (`value`: alloc's future; nothing\n"
"copied in), or where it stopped as `exchange` says (ALLOC, UNUSABLE, HANDLE), with\n"
"wasmtime's error and trap taken from the instance's slots. `ptr` and `offset`: the\n"
"buffer and where the response goes in it. None, before any call, for sizes `alloc`\n"
"cannot take.");

/* `start`'s and `answer`'s plan (their argument 0), checked: 0, or -1 with the
   error set (`usage` the TypeError's message). */
static int read_async_plan(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                           const char *usage, async_plan_t *p) {
    if (read_plan(args, nargs, want, usage, api.call_async != NULL && memory_data != NULL, p,
                  sizeof *p) < 0)
        return -1;
    if (p->ctx == NULL || p->memory == NULL || p->alloc == NULL || p->handle == NULL
            || p->values == NULL || p->results == NULL
            || p->trap == NULL || p->error == NULL || p->val_size < 8 || p->of_offset < 1
            || p->of_offset + 4 > p->val_size) {
        incomplete();
        return -1;
    }
    return 0;
}

static PyObject *start(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    async_plan_t p;
    if (read_async_plan(args, nargs, 6, "start(plan, method, path, headers, body, cap)", &p) < 0)
        return NULL;
    request_t r;
    int readable = read_request(args, &r);
    if (readable < 0) return NULL;
    if (readable == 0) Py_RETURN_NONE; /* `alloc` takes an i32: the hooks say why */

    void *future;
    int32_t v[10];
    v[0] = (int32_t)r.total;
    typed_i32s(&p, v, 1);
    int done = poll_once(&p, p.alloc, 1, 1, &future);
    if (done < 0) return PyErr_NoMemory();
    if (!done) return started(&p, ALLOC_SUSPENDED, (long long)(intptr_t)future, 0, 0);
    if (*p.error != NULL || *p.trap != NULL) return started(&p, ALLOC, 0, 0, 0);
    int32_t ptr = result_i32(&p);

    uint64_t at =
        copy_in(memory_data(p.ctx, p.memory), memory_size(p.ctx, p.memory), ptr, &r, v);
    if (at == 0) return started(&p, UNUSABLE, 0, ptr, 0);
    typed_i32s(&p, v, 10);
    done = poll_once(&p, p.handle, 10, 1, &future);
    if (done < 0) return PyErr_NoMemory();
    if (!done) return started(&p, SUSPENDED, (long long)(intptr_t)future, ptr, (int64_t)at);
    if (*p.error != NULL || *p.trap != NULL) return started(&p, HANDLE, 0, ptr, (int64_t)at);
    return started(&p, HANDLED, result_i32(&p), ptr, (int64_t)at);
}

/* -- a suspending instance's answer, once `handle` has returned ------------------ */
PyDoc_STRVAR(answer_doc,
"answer(plan, ptr, total, offset, written, cap)\n"
"    -> bytes | (stage, value, response, err, trap)\n\n"
"After `handle` returned `written` (at once in `start`, or resumed and driven from\n"
"Python): the response read from `offset`, then `dealloc(ptr, total)` polled once,\n"
"under the call's deadline (Python's to end). The response, or\n"
"where it stopped: RESULT (`value`: `written`, not in [0, cap]), OUTSIDE (the\n"
"response is not in memory), DEALLOC (wasmtime's error and trap, taken from the\n"
"instance's slots) or DEALLOC_SUSPENDED (`value`: dealloc's future, for Python to\n"
"drive and delete; `response`: the response, read before it).");

static PyObject *answer(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    async_plan_t p;
    if (read_async_plan(args, nargs, 6, "answer(plan, ptr, total, offset, written, cap)", &p) < 0)
        return NULL;
    long long n[5];
    for (int i = 0; i < 5; i++) {
        n[i] = PyLong_AsLongLong(args[1 + i]);
        if (n[i] == -1 && PyErr_Occurred()) return NULL;
    }
    const long long ptr = n[0], total = n[1], offset = n[2], written = n[3], cap = n[4];
    if (ptr < 0 || ptr > INT32_MAX || total < 0 || total > INT32_MAX || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "a buffer outside a 32-bit memory");
        return NULL;
    }
    if (written < 0 || written > cap)
        return Py_BuildValue("(iLOKK)", RESULT, written, Py_None, 0ULL, 0ULL);
    /* `handle` may have grown (and so moved) the memory. */
    if ((uint64_t)offset + (uint64_t)written > memory_size(p.ctx, p.memory))
        return Py_BuildValue("(iLOKK)", OUTSIDE, 0LL, Py_None, 0ULL, 0ULL);
    PyObject *response = PyBytes_FromStringAndSize(
        (const char *)memory_data(p.ctx, p.memory) + offset, (Py_ssize_t)written);
    if (response == NULL || p.dealloc == NULL) return response;

    int32_t v[2] = {(int32_t)ptr, (int32_t)total};
    typed_i32s(&p, v, 2);
    void *future;
    int done = poll_once(&p, p.dealloc, 2, 0, &future);
    if (done < 0) {
        Py_DECREF(response);
        return PyErr_NoMemory();
    }
    if (done && *p.error == NULL && *p.trap == NULL) return response;
    void *err = *p.error, *trap = *p.trap;
    *p.error = *p.trap = NULL;
    PyObject *out = Py_BuildValue(
        "(iLOKK)", done ? DEALLOC : DEALLOC_SUSPENDED, (long long)(intptr_t)future,
        done ? Py_None : response, (unsigned long long)(uintptr_t)err,
        (unsigned long long)(uintptr_t)trap);
    Py_DECREF(response);
    return out;
}

/* -- the same call on WasmEdge ----------------------------------------------------- */
/* `wasmedge_engine._EdgeInstance`'s call in C: `alloc`, the request copied in,
   `handle`, the response copied out, `dealloc`, each a `WasmEdge_ExecutorInvoke`
   with the GIL released, as ctypes calls it. Python registers the call with the
   engine's watchdog around it (the deadline), and, where a step fails, raises what
   the result code says (`_EdgeInstance._resume`). The same stages as `exchange`,
   the failure's `WasmEdge_Result` where wasmtime gives an error and a trap. */
typedef struct {
    uint64_t lo, hi, type, pad;
} wasmedge_value_t; /* WasmEdge_Value: every argument an i32, its type set once */
typedef uint32_t (*wasmedge_invoke_t)(void *executor, const void *func,
                                      const wasmedge_value_t *params, uint32_t nparams,
                                      wasmedge_value_t *returns, uint32_t nreturns);
typedef uint32_t (*wasmedge_pages_t)(const void *memory);
typedef uint8_t *(*wasmedge_pointer_t)(void *memory, uint32_t offset, uint32_t length);

static struct {
    wasmedge_invoke_t invoke;
    wasmedge_pages_t pages;
    wasmedge_pointer_t pointer;
} wasmedge;

PyDoc_STRVAR(configure_wasmedge_doc,
"configure_wasmedge(executor_invoke, memory_page_size, memory_pointer)\n\n"
"The addresses of WasmEdge's functions, from the library the engine loaded.");

static PyObject *configure_wasmedge(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *got[3];
    if (read_addresses(args, nargs, 3, "configure_wasmedge", got) < 0) return NULL;
    wasmedge.invoke = (wasmedge_invoke_t)(uintptr_t)got[0];
    wasmedge.pages = (wasmedge_pages_t)(uintptr_t)got[1];
    wasmedge.pointer = (wasmedge_pointer_t)(uintptr_t)got[2];
    Py_RETURN_NONE;
}

/* An instance's plan on WasmEdge: what `wasmedge_engine._EdgeInstance` packs once. */
typedef struct {
    void *executor;
    void *memory;
    const void *alloc;
    const void *handle;
    const void *dealloc; /* NULL: the module exports none */
    wasmedge_value_t *params; /* the instance's, ten of them, typed i32 */
    wasmedge_value_t *returns;
} wasmedge_plan_t;

static int wasmedge_call(const void *plan, const void *func, const int32_t *v, int n,
                         int nresults, int32_t *ret, uint64_t why[2]) {
    const wasmedge_plan_t *p = plan;
    for (int i = 0; i < n; i++) p->params[i].lo = (uint32_t)v[i];
    uint32_t result;
    Py_BEGIN_ALLOW_THREADS
    result = wasmedge.invoke(p->executor, func, p->params, (uint32_t)n, p->returns,
                             (uint32_t)nresults);
    Py_END_ALLOW_THREADS
    if (result != 0) {
        why[0] = result;
        return 0;
    }
    if (nresults) *ret = (int32_t)(uint32_t)p->returns[0].lo;
    return 1;
}

/* The memory's size now, and where it starts (0 and NULL when it has none). */
static uint64_t wasmedge_memory(const void *plan, uint8_t **base) {
    const wasmedge_plan_t *p = plan;
    uint64_t size = (uint64_t)wasmedge.pages(p->memory) * 65536;
    uint32_t length = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size; /* 4 GiB: all but a byte */
    *base = size ? wasmedge.pointer(p->memory, 0, length) : NULL;
    return *base == NULL ? 0 : size;
}

static const engine_t WASMEDGE = {wasmedge_call, wasmedge_memory};

PyDoc_STRVAR(wasmedge_exchange_doc,
"wasmedge_exchange(plan, method, path, headers, body, cap)\n"
"    -> bytes | (stage, ptr, written, result, 0) | None\n\n"
"`exchange` on WasmEdge: the guest's response, or where the call stopped, with\n"
"the failed call's `WasmEdge_Result` code; None, before any call, for sizes `alloc`\n"
"cannot take.");

static PyObject *wasmedge_exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    wasmedge_plan_t p;
    if (read_plan(args, nargs, 6, "wasmedge_exchange(plan, method, path, headers, body, cap)",
                  wasmedge.invoke != NULL, &p, sizeof p) < 0)
        return NULL;
    if (p.executor == NULL || p.memory == NULL || p.alloc == NULL || p.handle == NULL
            || p.params == NULL || p.returns == NULL)
        return incomplete();
    request_t r;
    int readable = read_request(args, &r);
    if (readable < 0) return NULL;
    if (readable == 0) Py_RETURN_NONE; /* `alloc` takes an i32: the hooks say why */

    int armed = 0; /* the deadline is the watchdog's, Python's to end */
    const void *const fns[3] = {p.alloc, p.handle, p.dealloc};
    return steps(&WASMEDGE, &p, fns, &r, &armed);
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {"exchange", (PyCFunction)(void (*)(void))exchange, METH_FASTCALL, exchange_doc},
    {"configure_setup", (PyCFunction)(void (*)(void))configure_setup, METH_FASTCALL,
     configure_setup_doc},
    {"open_store", (PyCFunction)(void (*)(void))open_store, METH_FASTCALL, open_store_doc},
    {"instantiate", (PyCFunction)(void (*)(void))instantiate, METH_FASTCALL, instantiate_doc},
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL, start_doc},
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL, answer_doc},
    {"configure_wasmedge", (PyCFunction)(void (*)(void))configure_wasmedge, METH_FASTCALL,
     configure_wasmedge_doc},
    {"wasmedge_exchange", (PyCFunction)(void (*)(void))wasmedge_exchange, METH_FASTCALL,
     wasmedge_exchange_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.sandbox._edgecall",
    "An edge-v1 instance on wasmtime in C: its call, its store and instance "
    "(wasmtime_engine.py's fast path); and its call on WasmEdge "
    "(wasmedge_engine.py's).", -1, methods,
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
            || PyModule_AddIntConstant(m, "DEALLOC", DEALLOC) < 0
            || PyModule_AddIntConstant(m, "SETUP_FUNCTIONS", (long)API_FUNCTIONS) < 0
            || PyModule_AddIntConstant(m, "MADE", MADE) < 0
            || PyModule_AddIntConstant(m, "NOT_MADE", NOT_MADE) < 0
            || PyModule_AddIntConstant(m, "INSTANTIATING", INSTANTIATING) < 0
            || PyModule_AddIntConstant(m, "INIT_FAILED", INIT_FAILED) < 0
            || PyModule_AddIntConstant(m, "INITIALIZING", INITIALIZING) < 0
            || PyModule_AddIntConstant(m, "SUSPENDED", SUSPENDED) < 0
            || PyModule_AddIntConstant(m, "HANDLED", HANDLED) < 0
            || PyModule_AddIntConstant(m, "ALLOC_SUSPENDED", ALLOC_SUSPENDED) < 0
            || PyModule_AddIntConstant(m, "DEALLOC_SUSPENDED", DEALLOC_SUSPENDED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *names = PyTuple_New((Py_ssize_t)N_EXPORTS); /* `instantiate`'s, in order */
    for (size_t i = 0; names != NULL && i < N_EXPORTS; i++) {
        PyObject *name = PyUnicode_FromString(EXPORTS[i]);
        if (name == NULL) Py_CLEAR(names);
        else PyTuple_SET_ITEM(names, (Py_ssize_t)i, name);
    }
    if (names == NULL || PyModule_AddObject(m, "EXPORT_NAMES", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
