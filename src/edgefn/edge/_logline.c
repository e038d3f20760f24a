/* The per-invocation log line (`logs.invocation_line`) written in C: the same bytes,
   one buffer, no intermediate strings. Written for every request.

   It writes exactly what `logs.invocation_line_py` writes, which stays the line of
   record: JSON strings escaped as `json.encoder.encode_basestring` escapes them
   (quote, backslash, control characters; nothing else), the Unicode line
   separators escaped over the whole line as `logs.one_line` does, UTF-8 out. For
   anything unusual (a field not of its type, a time that is not finite, text that
   is not valid UTF-8) it declines with None and the Python line is written; the
   tests compare both on generated records. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The fields of `logs.Invocation`, in order. */
enum {
    REQUEST_ID, FUNCTION_ID, VERSION, NODE_ID, METHOD, PATH, STATUS, START, ELAPSED,
    TRACE_ID, SPAN_ID, PARENT_SPAN_ID, TRACE_FLAGS, ERROR_MESSAGE, PROJECT_ID, N_FIELDS
};

/* Room for the fixed text, the numbers and the keys; strings are counted apart. */
#define FIXED 512
#define STACK 2048

typedef struct {
    char *at;
} out_t;

static void put(out_t *o, const char *s, size_t n) {
    memcpy(o->at, s, n);
    o->at += n;
}

#define PUT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* UTF-8 `s` with U+0085, U+2028 and U+2029 escaped (`one_line`), and, when `quote`,
   as a JSON string (`encode_basestring`). At most 6 bytes out per byte in. */
static void text(out_t *o, const char *s, Py_ssize_t n, int quote) {
    static const char hex[] = "0123456789abcdef";
    if (quote) *o->at++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0xC2 && c != 0xE2) {
            *o->at++ = (char)c;
            continue;
        }
        if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] == 0x85) {
            PUT(o, "\\u0085");
            i += 1;
        } else if (c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80
                   && ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9)) {
            PUT(o, "\\u202");
            *o->at++ = (unsigned char)s[i + 2] == 0xA8 ? '8' : '9';
            i += 2;
        } else if (c >= 0x20 || !quote) {
            /* 0xC2 or 0xE2 starting another character; or, outside a JSON string (a
               trace id), anything: `invocation_line_py` puts those fields in as they are. */
            if (quote && (c == '"' || c == '\\')) *o->at++ = '\\';
            *o->at++ = (char)c;
        } else {
            *o->at++ = '\\';
            switch (c) {
            case '\n': *o->at++ = 'n'; break;
            case '\r': *o->at++ = 'r'; break;
            case '\t': *o->at++ = 't'; break;
            case '\b': *o->at++ = 'b'; break;
            case '\f': *o->at++ = 'f'; break;
            default:
                PUT(o, "u00");
                *o->at++ = hex[c >> 4];
                *o->at++ = hex[c & 15];
            }
        }
    }
    if (quote) *o->at++ = '"';
}

/* `divmod(int(x + 0.5), unit)` as Python computes it (truncation, then floor
   division); 0 where `x` is out of range. */
static int split(double x, int64_t unit, long long *whole, long long *part) {
    double v = x + 0.5;
    if (!isfinite(v) || fabs(v) >= 9.0e18) return 0;
    int64_t t = (int64_t)v, q = t / unit, r = t % unit;
    if (r < 0) {
        r += unit;
        q -= 1;
    }
    *whole = q;
    *part = r;
    return 1;
}

PyDoc_STRVAR(invocation_line_doc,
"invocation_line(inv) -> bytes | None\n\n"
"`logs.invocation_line_py(inv)`, or None where that one is to be used.");

static PyObject *invocation_line(PyObject *self, PyObject *inv) {
    (void)self;
    if (!PyTuple_Check(inv) || PyTuple_GET_SIZE(inv) != N_FIELDS) Py_RETURN_NONE;
    static const int strings[] = {REQUEST_ID, FUNCTION_ID, VERSION, NODE_ID, METHOD, PATH,
                                  TRACE_ID, SPAN_ID, PARENT_SPAN_ID, PROJECT_ID, ERROR_MESSAGE};
    const char *utf8[N_FIELDS] = {0};
    Py_ssize_t len[N_FIELDS] = {0};
    size_t room = FIXED;
    for (size_t k = 0; k < sizeof strings / sizeof *strings; k++) {
        int f = strings[k];
        PyObject *v = PyTuple_GET_ITEM(inv, f);
        if (f == ERROR_MESSAGE && v == Py_None) continue;
        if (!PyUnicode_CheckExact(v)) Py_RETURN_NONE;
        utf8[f] = PyUnicode_AsUTF8AndSize(v, &len[f]);
        if (utf8[f] == NULL) {  /* a lone surrogate: Python's `encode` is the one to fail */
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        room += 6 * (size_t)len[f];
    }
    PyObject *status_obj = PyTuple_GET_ITEM(inv, STATUS);
    PyObject *start_obj = PyTuple_GET_ITEM(inv, START);
    PyObject *elapsed_obj = PyTuple_GET_ITEM(inv, ELAPSED);
    if (!PyLong_CheckExact(status_obj) || !PyFloat_CheckExact(start_obj)
            || !PyFloat_CheckExact(elapsed_obj))
        Py_RETURN_NONE;
    int overflow = 0;
    long long status = PyLong_AsLongLongAndOverflow(status_obj, &overflow);
    if (overflow) Py_RETURN_NONE;
    double start = PyFloat_AS_DOUBLE(start_obj), elapsed = PyFloat_AS_DOUBLE(elapsed_obj);
    long long s, s_us, e, e_us, ms, ms_us;
    if (!split(start * 1e6, 1000000, &s, &s_us) || !split((start + elapsed) * 1e6, 1000000, &e, &e_us)
            || !split(elapsed * 1e6, 1000, &ms, &ms_us))
        Py_RETURN_NONE;

    char stack[STACK];
    char *buf = room <= STACK ? stack : PyMem_Malloc(room);
    if (buf == NULL) return PyErr_NoMemory();
    out_t o = {buf};
    PUT(&o, "{\"type\":\"invocation\",\"request_id\":");
    text(&o, utf8[REQUEST_ID], len[REQUEST_ID], 1);
    PUT(&o, ",\"function_id\":");
    text(&o, utf8[FUNCTION_ID], len[FUNCTION_ID], 1);
    PUT(&o, ",\"project_id\":");
    text(&o, utf8[PROJECT_ID], len[PROJECT_ID], 1);
    PUT(&o, ",\"version\":");
    text(&o, utf8[VERSION], len[VERSION], 1);
    PUT(&o, ",\"node_id\":");
    text(&o, utf8[NODE_ID], len[NODE_ID], 1);
    o.at += snprintf(o.at, 200, ",\"start\":%lld.%06lld,\"end\":%lld.%06lld,\"duration_ms\":"
                     "%lld.%03lld,\"status\":%lld,\"method\":", s, s_us, e, e_us, ms, ms_us,
                     status);
    text(&o, utf8[METHOD], len[METHOD], 1);
    PUT(&o, ",\"path\":");
    text(&o, utf8[PATH], len[PATH], 1);
    PUT(&o, ",\"trace_id\":\"");
    text(&o, utf8[TRACE_ID], len[TRACE_ID], 0);
    PUT(&o, "\",\"span_id\":\"");
    text(&o, utf8[SPAN_ID], len[SPAN_ID], 0);
    *o.at++ = '"';
    if (len[PARENT_SPAN_ID]) {
        PUT(&o, ",\"parent_span_id\":\"");
        text(&o, utf8[PARENT_SPAN_ID], len[PARENT_SPAN_ID], 0);
        *o.at++ = '"';
    }
    if (utf8[ERROR_MESSAGE] != NULL) {
        PUT(&o, ",\"error_message\":");
        text(&o, utf8[ERROR_MESSAGE], len[ERROR_MESSAGE], 1);
    }
    PUT(&o, "}\n");
    PyObject *line = PyBytes_FromStringAndSize(buf, o.at - buf);
    if (buf != stack) PyMem_Free(buf);
    return line;
}

static PyMethodDef methods[] = {
    {"invocation_line", invocation_line, METH_O, invocation_line_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.edge._logline",
    "The per-invocation log line written in C (logs.py's fast half).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__logline(void) {
    return PyModule_Create(&module);
}
