/* The front's HTTP/1.1 answer written in C (`front.serialize`): status line, date,
   the response's headers, content-length (and connection: close), the body, in one
   buffer. Written for every response.

   The same bytes as `front.serialize_py`, which stays the answer of record. The
   headers are text that the front encodes as latin-1; a header with a character
   latin-1 has not (or one not of its type) is declined with None, and the Python
   answer raises as it always did. The values were checked where they were made
   (`abi.parse_response` allows no CR, LF or NUL in them). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

/* A header's text as latin-1 bytes: NULL where it is not text of one-byte characters. */
static const char *latin1(PyObject *s, Py_ssize_t *n) {
    if (!PyUnicode_CheckExact(s) || PyUnicode_READY(s) < 0
            || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND)
        return NULL;
    *n = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_1BYTE_DATA(s);
}

PyDoc_STRVAR(serialize_doc,
"serialize(status_line, date, headers, body, head_only, keep_alive) -> bytes | None\n\n"
"`front.serialize_py`'s bytes, given its status line and date header; None where\n"
"a header is not latin-1 text.");

static PyObject *serialize(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "serialize takes 6 arguments");
        return NULL;
    }
    PyObject *status = args[0], *date = args[1], *headers = args[2], *body = args[3];
    if (!PyBytes_CheckExact(status) || !PyBytes_CheckExact(date) || !PyList_CheckExact(headers)
            || !PyBytes_CheckExact(body))
        Py_RETURN_NONE;
    int head_only = PyObject_IsTrue(args[4]), keep_alive = PyObject_IsTrue(args[5]);
    if (head_only < 0 || keep_alive < 0) return NULL;

    Py_ssize_t n = PyList_GET_SIZE(headers), size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        Py_ssize_t a, b;
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
                || latin1(PyTuple_GET_ITEM(pair, 0), &a) == NULL
                || latin1(PyTuple_GET_ITEM(pair, 1), &b) == NULL)
            Py_RETURN_NONE;
        size += a + b + 4;
    }
    char end[64];
    int end_len = snprintf(end, sizeof end, keep_alive ? "content-length: %zd\r\n\r\n"
                           : "content-length: %zd\r\nconnection: close\r\n\r\n",
                           PyBytes_GET_SIZE(body));
    Py_ssize_t body_len = head_only ? 0 : PyBytes_GET_SIZE(body);
    size += PyBytes_GET_SIZE(status) + PyBytes_GET_SIZE(date) + end_len + body_len;

    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    memcpy(at, PyBytes_AS_STRING(status), (size_t)PyBytes_GET_SIZE(status));
    at += PyBytes_GET_SIZE(status);
    memcpy(at, PyBytes_AS_STRING(date), (size_t)PyBytes_GET_SIZE(date));
    at += PyBytes_GET_SIZE(date);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        Py_ssize_t a, b;
        const char *name = latin1(PyTuple_GET_ITEM(pair, 0), &a);
        const char *value = latin1(PyTuple_GET_ITEM(pair, 1), &b);
        memcpy(at, name, (size_t)a);
        at += a;
        *at++ = ':';
        *at++ = ' ';
        memcpy(at, value, (size_t)b);
        at += b;
        *at++ = '\r';
        *at++ = '\n';
    }
    memcpy(at, end, (size_t)end_len);
    at += end_len;
    memcpy(at, PyBytes_AS_STRING(body), (size_t)body_len);
    return out;
}

static PyMethodDef methods[] = {
    {"serialize", (PyCFunction)(void (*)(void))serialize, METH_FASTCALL, serialize_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.edge.worker._answer",
    "The front's HTTP/1.1 answer written in C (front.py's fast half).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__answer(void) {
    return PyModule_Create(&module);
}
