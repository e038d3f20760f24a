/* The edge-v1 encodings in C: the response every edge-v1 call returns read
   (`abi.parse_response`), the request's header block written (`abi.encode_headers`).
   The fast half of `abi.py`.

   It accepts exactly what `abi.parse_response` accepts and gives the same result;
   anything else it declines (returns None) and the Python reading runs, which
   raises the `GuestError` with its message. The bytes are the guest's: every
   read is bounded by the buffer's length, nothing is written outside the objects
   built here, and the tests compare both readings on generated input.

   What it saves: the regular expression, a list and a tuple per header line, and,
   for the front, decoding the header bytes to text in a second pass. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* RFC 9110 token characters (a header name). */
static unsigned char token[256];

static void init_token(void) {
    const char *extra = "!#$%&'*+.^_`|~-";
    for (int c = '0'; c <= '9'; c++) token[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) token[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) token[c] = 1;
    for (const char *p = extra; *p; p++) token[(unsigned char)*p] = 1;
}

/* bytes.strip()'s whitespace. */
static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Names the front drops: the node frames the answer itself. Lower-case. */
static int hop_by_hop(const char *name, Py_ssize_t n) {
    switch (n) {
    case 7: return memcmp(name, "upgrade", 7) == 0;
    case 10: return memcmp(name, "connection", 10) == 0 || memcmp(name, "keep-alive", 10) == 0;
    case 14: return memcmp(name, "content-length", 14) == 0;
    case 17: return memcmp(name, "transfer-encoding", 17) == 0;
    default: return 0;
    }
}

static const char *find(const char *hay, Py_ssize_t n, const char *needle, Py_ssize_t m) {
    return (const char *)memmem(hay, (size_t)n, needle, (size_t)m);
}

/* One header line (no '\n'; trailing '\r's already cut) appended to `headers`:
   1 appended, 0 dropped (hop-by-hop), -1 not a header line, -2 a Python error. */
static int header_line(const char *p, Py_ssize_t n, int text, PyObject *headers) {
    Py_ssize_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    Py_ssize_t name_at = i;
    while (i < n && token[(unsigned char)p[i]]) i++;
    Py_ssize_t name_len = i - name_at;
    if (name_len == 0) return -1;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    if (i >= n || p[i] != ':') return -1;
    i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
    Py_ssize_t value_at = i, end = n;
    for (Py_ssize_t j = value_at; j < n; j++) {
        unsigned char c = (unsigned char)p[j];
        if (c == '\r' || c == '\n' || c == '\0') return -1;
    }
    while (end > value_at && (p[end - 1] == ' ' || p[end - 1] == '\t')) end--;

    char small[64];
    char *lower = name_len <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)name_len);
    if (lower == NULL) {
        PyErr_NoMemory();
        return -2;
    }
    for (Py_ssize_t k = 0; k < name_len; k++) {
        unsigned char c = (unsigned char)p[name_at + k];
        lower[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    int result = 0;
    if (!hop_by_hop(lower, name_len)) {
        PyObject *pair;
        if (text)
            pair = Py_BuildValue("(NN)", PyUnicode_DecodeASCII(lower, name_len, NULL),
                                 PyUnicode_DecodeLatin1(p + value_at, end - value_at, NULL));
        else
            pair = Py_BuildValue("(y#y#)", lower, name_len, p + value_at, end - value_at);
        result = pair == NULL ? -2 : (PyList_Append(headers, pair) < 0 ? -2 : 1);
        Py_XDECREF(pair);
    }
    if (lower != small) PyMem_Free(lower);
    return result;
}

static PyObject *parse(const char *raw, Py_ssize_t size, int text) {
    /* `_split_head`: the first blank line, LF LF or CR LF CR LF, whichever comes first. */
    const char *lf = find(raw, size, "\n\n", 2);
    const char *crlf = find(raw, size, "\r\n\r\n", 4);
    Py_ssize_t head_len, body_at;
    if (crlf != NULL && (lf == NULL || crlf < lf)) {
        head_len = crlf - raw;
        body_at = head_len + 4;
    } else if (lf != NULL) {
        head_len = lf - raw;
        body_at = head_len + 2;
    } else {
        head_len = size;
        body_at = size;
    }

    /* The status line: three digits, with bytes.strip()'s whitespace around them. */
    const char *eol = memchr(raw, '\n', (size_t)head_len);
    Py_ssize_t first = eol ? eol - raw : head_len, a = 0, b = first;
    while (a < b && is_space((unsigned char)raw[a])) a++;
    while (b > a && is_space((unsigned char)raw[b - 1])) b--;
    if (b - a != 3) Py_RETURN_NONE;
    int status = 0;
    for (Py_ssize_t k = a; k < b; k++) {
        if (raw[k] < '0' || raw[k] > '9') Py_RETURN_NONE;
        status = status * 10 + (raw[k] - '0');
    }
    if (status < 100 || status > 599) Py_RETURN_NONE;

    PyObject *headers = PyList_New(0);
    if (headers == NULL) return NULL;
    Py_ssize_t at = first + 1;
    while (at <= head_len && eol != NULL) {
        const char *next = memchr(raw + at, '\n', (size_t)(head_len - at));
        Py_ssize_t stop = next ? next - raw : head_len, n = stop - at;
        while (n > 0 && raw[at + n - 1] == '\r') n--;  /* line.rstrip(b"\r") */
        if (n > 0) {
            int r = header_line(raw + at, n, text, headers);
            if (r == -2) {
                Py_DECREF(headers);
                return NULL;
            }
            if (r == -1) {
                Py_DECREF(headers);
                Py_RETURN_NONE;
            }
        }
        if (next == NULL) break;
        at = stop + 1;
    }
    return Py_BuildValue("(iNy#)", status, headers, raw + body_at, size - body_at);
}

PyDoc_STRVAR(parse_response_doc,
"parse_response(raw, text) -> (status, headers, body) | None\n\n"
"What `abi.parse_response` reads from `raw`, hop-by-hop headers left out; the\n"
"header names and values as latin-1 text when `text`, else as bytes. None where\n"
"`abi.parse_response` would raise.");

static PyObject *parse_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse_response(raw, text) takes 2 arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) Py_RETURN_NONE;  /* a buffer of another type: Python's */
    int text = PyObject_IsTrue(args[1]);
    if (text < 0) return NULL;
    return parse(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), text);
}

PyDoc_STRVAR(encode_headers_doc,
"encode_headers(headers) -> bytes | None\n\n"
"`abi.encode_headers_py(headers)`; None for anything but a list of pairs of bytes.");

static PyObject *encode_headers(PyObject *self, PyObject *headers) {
    (void)self;
    if (!PyList_CheckExact(headers)) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(headers), size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            Py_RETURN_NONE;
        size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0))
                + PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 3;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        const char *p = PyBytes_AS_STRING(name);
        for (Py_ssize_t k = 0, m = PyBytes_GET_SIZE(name); k < m; k++) {
            unsigned char c = (unsigned char)p[k];
            *at++ = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        *at++ = ':';
        *at++ = ' ';
        memcpy(at, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        at += PyBytes_GET_SIZE(value);
        *at++ = '\n';
    }
    return out;
}

static PyMethodDef methods[] = {
    {"encode_headers", encode_headers, METH_O, encode_headers_doc},
    {"parse_response", (PyCFunction)(void (*)(void))parse_response, METH_FASTCALL,
     parse_response_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.sandbox._abi",
    "The edge-v1 encodings in C (abi.py's fast half).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__abi(void) {
    init_token();
    return PyModule_Create(&module);
}
