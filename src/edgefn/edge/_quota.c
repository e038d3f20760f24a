/* A project's quota counts on this node, admitted and released in C: the fast half
   of `quotas.QuotaTable._admit_py` and `_release_py`, which stay the rules of record.

   The table is `quotas.py`'s shared memory (its layout is described there): the
   header's worker count at byte 8, a slot's remote sums at `off + 48`, each worker's
   column at `off + 128 + 64 * worker`. The caller holds the table's thread lock, as
   the Python does; each worker writes only its own column. Every offset is checked
   against the mapping's length; a limit or an offset outside what this code takes
   is declined (-1) and the Python decides. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define WORKERS_AT 8
#define REMOTE_AT 48
#define COLUMNS_AT 128
#define STRIDE 64
#define MAX_WORKERS 64

static int64_t get(const char *p) {
    int64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void put(char *p, int64_t v) { memcpy(p, &v, sizeof v); }

/* Python ints as int64; 0 where one does not fit (the caller declines). */
static int int64s(PyObject *const *args, int n, int64_t *out) {
    for (int i = 0; i < n; i++) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(args[i], &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        out[i] = v;
    }
    return 1;
}

PyDoc_STRVAR(admit_doc,
"admit(table, off, own, now, minute, day, fresh_ms, max_concurrency,\n"
"      invocations_per_minute, cpu_us_per_day) -> int\n\n"
"`QuotaTable._admit_py`: 0 admitted (the worker's column counts it), 1 over the\n"
"concurrency, 2 over the rate, 3 over the CPU; -1 declined.");

static PyObject *admit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "admit takes 10 arguments");
        return NULL;
    }
    int64_t v[8]; /* off, own, minute, day, max_conc, per_minute, cpu_day (v[7] unused) */
    PyObject *ints[7] = {args[1], args[2], args[4], args[5], args[7], args[8], args[9]};
    double now = PyFloat_AsDouble(args[3]), fresh_ms = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred()) return NULL;
    if (!int64s(ints, 7, v)) return PyLong_FromLong(-1);
    int64_t off = v[0], own = v[1], minute = v[2], day = v[3];
    int64_t max_conc = v[4], per_minute = v[5], cpu_day = v[6];

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) return NULL;
    char *map = view.buf;
    int64_t size = view.len;
    int32_t workers;
    long result = -1;
    memcpy(&workers, map + WORKERS_AT, sizeof workers);
    if (off < 0 || workers < 1 || workers > MAX_WORKERS
            || off + COLUMNS_AT + (int64_t)workers * STRIDE > size
            || own < off + COLUMNS_AT || own + 40 > off + COLUMNS_AT + MAX_WORKERS * STRIDE
            || own + 40 > size)
        goto done;

    const char *remote = map + off + REMOTE_AT;
    int64_t r_minute = get(remote), r_inv = get(remote + 8), r_day = get(remote + 16),
            r_cpu = get(remote + 24), r_conc = get(remote + 32), r_at = get(remote + 40);
    if (now * 1000 - (double)r_at > fresh_ms) r_inv = r_cpu = r_conc = 0;
    if (r_minute != minute) r_inv = 0;
    if (r_day != day) r_cpu = 0;

    int64_t conc = 0, invocations = 0, cpu = 0;
    for (int32_t w = 0; w < workers; w++) {
        const char *c = map + off + COLUMNS_AT + (int64_t)w * STRIDE;
        conc += get(c);
        if (get(c + 8) == minute) invocations += get(c + 16);
        if (get(c + 24) == day) cpu += get(c + 32);
    }
    if (conc + r_conc >= max_conc) {
        result = 1;
    } else if (invocations + r_inv >= per_minute) {
        result = 2;
    } else if (cpu + r_cpu >= cpu_day) {
        result = 3;
    } else {
        char *mine = map + own;
        int64_t m = get(mine + 8), n = get(mine + 16);
        if (m != minute) {
            m = minute;
            n = 0;
        }
        put(mine, get(mine) + 1);
        put(mine + 8, m);
        put(mine + 16, n + 1);
        result = 0;
    }
done:
    PyBuffer_Release(&view);
    return PyLong_FromLong(result);
}

PyDoc_STRVAR(release_doc,
"release(table, own, day, cpu_us) -> bool\n\n"
"`QuotaTable._release_py`: the worker's column counts one execution ended, having\n"
"used `cpu_us`; False declined.");

static PyObject *release(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "release takes 4 arguments");
        return NULL;
    }
    int64_t v[3];
    if (!int64s(args + 1, 3, v)) Py_RETURN_FALSE;
    int64_t own = v[0], day = v[1], cpu_us = v[2];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) return NULL;
    int ok = own >= COLUMNS_AT && own + 40 <= view.len;
    if (ok) {
        char *mine = (char *)view.buf + own;
        int64_t d = get(mine + 24), u = get(mine + 32);
        if (d != day) {
            d = day;
            u = 0;
        }
        put(mine, get(mine) - 1);
        put(mine + 24, d);
        put(mine + 32, u + cpu_us);
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"admit", (PyCFunction)(void (*)(void))admit, METH_FASTCALL, admit_doc},
    {"release", (PyCFunction)(void (*)(void))release, METH_FASTCALL, release_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.edge._quota",
    "Quota admission in C (quotas.py's fast half).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__quota(void) {
    return PyModule_Create(&module);
}
