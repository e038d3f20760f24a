/* One plain HTTP/1.1 request read in C, in one call: the front's fast path for the
   request that arrives whole in one read (`front._Connection.data_received`).

   A strict subset of what llhttp (httptools, the front's parser of record)
   accepts, read the way the front reads it. Anything outside the subset is
   declined (None) and goes to httptools as before: so this parser never has to
   decide a doubtful case, and everything it accepts is checked against llhttp by
   the differential tests. The subset:

   - a request line `METHOD SP /target SP HTTP/1.1 CRLF`: a method of the seven
     common ones, an origin-form target of visible ASCII without `#` and the
     characters URLs do not use unescaped (`"<>\^`{|}`);
   - header lines `name: value CRLF`: a token name, optional blanks before the
     value, a value of visible ASCII and inner blanks, none after it; at most 100;
   - no Transfer-Encoding, Upgrade or Expect, at most one Host and one
     Content-Length (decimal digits, at most 15), Connection only `keep-alive` or
     `close`;
   - the blank line, then exactly Content-Length bytes of body and nothing after
     them (a request in part, or pipelined behind another, goes to httptools).

   The head is at most `max_head` bytes. Every read is bounded by the buffer. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_HEADERS 100

static unsigned char token[256];
static PyObject *methods[7]; /* the method names as text, made once */
static const char *method_names[7] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH",
                                      "OPTIONS"};

static void init_tables(void) {
    const char *extra = "!#$%&'*+.^_`|~-";
    for (int c = '0'; c <= '9'; c++) token[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) token[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) token[c] = 1;
    for (const char *p = extra; *p; p++) token[(unsigned char)*p] = 1;
}

static int target_char(unsigned char c) {
    if (c < 0x21 || c > 0x7E) return 0;
    return strchr("#\"<>\\^`{|}", c) == NULL;
}

/* Lower-case ASCII comparison of `p[0..n)` with the lower-case `lit`. */
static int is(const char *p, Py_ssize_t n, const char *lit) {
    Py_ssize_t m = (Py_ssize_t)strlen(lit);
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lit[i]) return 0;
    }
    return 1;
}

typedef struct {
    Py_ssize_t name, name_len, value, value_len;
} line_t;

PyDoc_STRVAR(parse_request_doc,
"parse_request(data, max_head) -> (method, target, headers, host, content_length,\n"
"                                  body, keep_alive) | None\n\n"
"`data` as one whole plain HTTP/1.1 request, read as the front reads it (header\n"
"names lower-cased, `host` the Host header or b\"\", `content_length` None\n"
"without one); None for anything else, which httptools then reads.");

static PyObject *parse_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse_request(data, max_head)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0])) Py_RETURN_NONE;
    Py_ssize_t max_head = PyLong_AsSsize_t(args[1]);
    if (max_head == -1 && PyErr_Occurred()) return NULL;
    if (max_head < 4) Py_RETURN_NONE;
    const char *d = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    const char *end = memmem(d, (size_t)(size < max_head ? size : max_head), "\r\n\r\n", 4);
    if (end == NULL) Py_RETURN_NONE;
    Py_ssize_t head = end - d + 2; /* the head's lines, each with its CRLF */
    Py_ssize_t body_at = head + 2;

    /* The request line. */
    Py_ssize_t i = 0;
    while (i < head && d[i] >= 'A' && d[i] <= 'Z') i++;
    int method = -1;
    for (int k = 0; k < 7; k++)
        if ((Py_ssize_t)strlen(method_names[k]) == i && memcmp(d, method_names[k], (size_t)i) == 0)
            method = k;
    if (method < 0 || i >= head || d[i] != ' ') Py_RETURN_NONE;
    Py_ssize_t target = ++i;
    if (i >= head || d[i] != '/') Py_RETURN_NONE;
    while (i < head && target_char((unsigned char)d[i])) i++;
    Py_ssize_t target_len = i - target;
    if (head - i < 11 || memcmp(d + i, " HTTP/1.1\r\n", 11) != 0) Py_RETURN_NONE;
    i += 11;

    /* The header lines. */
    line_t lines[MAX_HEADERS];
    int n = 0, keep_alive = 1, hosts = 0;
    Py_ssize_t host = 0, host_len = 0;
    long long content_length = -1;
    while (i < head) {
        if (n == MAX_HEADERS) Py_RETURN_NONE;
        line_t *l = &lines[n++];
        l->name = i;
        while (i < head && token[(unsigned char)d[i]]) i++;
        l->name_len = i - l->name;
        if (l->name_len == 0 || i >= head || d[i] != ':') Py_RETURN_NONE;
        i++;
        while (i < head && (d[i] == ' ' || d[i] == '\t')) i++;
        l->value = i;
        while (i < head && (((unsigned char)d[i] >= 0x21 && (unsigned char)d[i] <= 0x7E)
                            || d[i] == ' ' || d[i] == '\t'))
            i++;
        l->value_len = i - l->value;
        if (head - i < 2 || d[i] != '\r' || d[i + 1] != '\n') Py_RETURN_NONE;
        i += 2;
        if (l->value_len > 0 && (d[l->value + l->value_len - 1] == ' '
                                 || d[l->value + l->value_len - 1] == '\t'))
            Py_RETURN_NONE;
        const char *name = d + l->name, *value = d + l->value;
        Py_ssize_t nl = l->name_len, vl = l->value_len;
        if (is(name, nl, "transfer-encoding") || is(name, nl, "upgrade") || is(name, nl, "expect"))
            Py_RETURN_NONE;
        if (is(name, nl, "host")) {
            if (hosts++) Py_RETURN_NONE;
            host = l->value;
            host_len = vl;
        } else if (is(name, nl, "content-length")) {
            if (content_length >= 0 || vl == 0 || vl > 15) Py_RETURN_NONE;
            content_length = 0;
            for (Py_ssize_t k = 0; k < vl; k++) {
                if (value[k] < '0' || value[k] > '9') Py_RETURN_NONE;
                content_length = content_length * 10 + (value[k] - '0');
            }
        } else if (is(name, nl, "connection")) {
            if (is(value, vl, "close")) keep_alive = 0;
            else if (!is(value, vl, "keep-alive")) Py_RETURN_NONE;
        }
    }
    Py_ssize_t body_len = content_length < 0 ? 0 : (Py_ssize_t)content_length;
    if (size - body_at != body_len) Py_RETURN_NONE;

    PyObject *headers = PyList_New(n);
    if (headers == NULL) return NULL;
    for (int k = 0; k < n; k++) {
        line_t *l = &lines[k];
        PyObject *name = PyBytes_FromStringAndSize(NULL, l->name_len);
        if (name == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        char *lower = PyBytes_AS_STRING(name);
        for (Py_ssize_t j = 0; j < l->name_len; j++) {
            unsigned char c = (unsigned char)d[l->name + j];
            lower[j] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        PyObject *pair = Py_BuildValue("(Ny#)", name, d + l->value, l->value_len);
        if (pair == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        PyList_SET_ITEM(headers, k, pair);
    }
    PyObject *length;
    if (content_length < 0) {
        length = Py_None;
        Py_INCREF(length);
    } else {
        length = PyLong_FromLongLong(content_length);
    }
    return Py_BuildValue("(Oy#Ny#Ny#O)", methods[method], d + target, target_len, headers,
                         d + host, host_len, length, d + body_at, body_len,
                         keep_alive ? Py_True : Py_False);
}

static PyMethodDef module_methods[] = {
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     parse_request_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edgefn.edge.worker._http1",
    "One plain HTTP/1.1 request read in C (the front's fast path).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__http1(void) {
    init_tables();
    for (int k = 0; k < 7; k++) {
        methods[k] = PyUnicode_InternFromString(method_names[k]);
        if (methods[k] == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
