/*
 * bitsec._speedups: the guard's per-request steps in compiled code (optional).
 *
 * bitsec's Python package reaches libbitsec through ctypes, and everything it does works
 * without this module. This module only makes bitsec.fastapi's GuardMiddleware cheaper on
 * the request path, where its Python was most of a protected endpoint's cost (BENCHMARKS.md,
 * HTTP). Each function does what a piece of guard.py or guardcheck.py does, and the tests
 * compare the two (tests/test_speedups.py):
 *
 *   scan(headers)              the header pass: Authorization, User-Agent, X-Request-ID
 *   guard_request(...)         bitsec_guard_check_request for a token whose claims are known:
 *                              the request struct on the C stack, the GIL released as ctypes
 *                              releases it (the function's address comes from the ctypes
 *                              library once: bind_guard)
 *   guard_known(memo, ...)     _guard_call for a token in the runtime's claims memo
 *   allowed(GuardResult, ...)  _outcome of an allowed decision
 *   sender(send, ...)          the ASGI send wrapper: the guard's headers on the response's
 *                              start (the application's own names win), and its record
 *   record(fallback, ...)      _record_text's common record (any other: fallback's, Python's)
 *
 * None of them decides anything: the library decides, and Python writes every record this
 * module does not. The module is private: guard_request and guard_known take the runtime's
 * handle and a route's address as integers from the binding's own objects, as ctypes would,
 * and trust them (they are never a client's input); every other argument is checked. Built against CPython's limited API (3.10 and later: one binary for every
 * version). The package works without it (BITSEC_SPEEDUPS=0, or a source install without a C
 * compiler); `make test` runs the guard's suites both ways.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* bitsec_guard_result and bitsec_guard_request as include/bitsec.h declares them (ABI 1). */
typedef struct {
    int32_t decision, http_status, token_reason, permission_reason, permission_rule, rate_reason;
    int64_t rate_limit, rate_remaining, rate_reset_after, rate_retry_after, rate_flags;
} guard_result;

typedef struct {
    char const *token;
    size_t token_len;
    char const *key;
    size_t key_len;
    char const *context;
    size_t context_len;
    int64_t at;
    char *out_buf;
    size_t out_cap;
    size_t out_len;
    guard_result result;
} guard_request_t;

_Static_assert(sizeof(guard_result) == 64, "bitsec_guard_result is 64 bytes");
_Static_assert(sizeof(guard_request_t) == 144, "bitsec_guard_request is 144 bytes (BITSEC_GUARD_REQUEST_BYTES)");

typedef int32_t (*guard_fn)(void *handle, void const *route, guard_request_t *request);

static guard_fn bound_guard; /* set once by bind_guard, before any call */

static PyObject *bind_guard(PyObject *module, PyObject *arg) {
    (void)module;
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "bind_guard: a null function address");
        return NULL;
    }
    bound_guard = (guard_fn)p;
    Py_RETURN_NONE;
}

static PyObject *guard_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "guard_request(handle, route, token, key)");
        return NULL;
    }
    if (bound_guard == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "guard_request: bind_guard was not called");
        return NULL;
    }
    void *handle = PyLong_AsVoidPtr(args[0]);
    if (handle == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "guard_request: a null handle");
        return NULL;
    }
    void *route = PyLong_AsVoidPtr(args[1]);
    if (route == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "guard_request: a null route");
        return NULL;
    }
    if (!PyBytes_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "guard_request: token and key must be bytes");
        return NULL;
    }
    char *token, *key;
    Py_ssize_t token_len, key_len;
    if (PyBytes_AsStringAndSize(args[2], &token, &token_len) < 0 || PyBytes_AsStringAndSize(args[3], &key, &key_len) < 0)
        return NULL;
    guard_request_t request;
    memset(&request, 0, sizeof request);
    request.token = token;
    request.token_len = (size_t)token_len;
    request.key = key;
    request.key_len = (size_t)key_len;
    int32_t rc;
    /* The bytes objects stay alive: the caller holds them for the duration of this call. */
    Py_BEGIN_ALLOW_THREADS
    rc = bound_guard(handle, route, &request);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return PyLong_FromLong(rc);
    guard_result const *r = &request.result;
    long long const values[11] = {r->decision, r->http_status, r->token_reason, r->permission_reason,
                                  r->permission_rule, r->rate_reason, r->rate_limit, r->rate_remaining,
                                  r->rate_reset_after, r->rate_retry_after, r->rate_flags};
    PyObject *fields = PyTuple_New(11);
    if (fields == NULL)
        return NULL;
    for (int i = 0; i < 11; i++) {
        PyObject *v = PyLong_FromLongLong(values[i]);
        if (v == NULL) {
            Py_DECREF(fields);
            return NULL;
        }
        PyTuple_SetItem(fields, i, v);
    }
    return fields;
}


/* ---- headers ----------------------------------------------------------------------------- */

/* scan(headers) -> (authorization, user_agent, x_request_id): the first value of each (None
 * when absent), names compared as the bytes ASGI sends (lower case). None when headers is not
 * a list or tuple of pairs: guard.py's loop then reads it (and raises what Python raises). */
static PyObject *scan(PyObject *module, PyObject *headers) {
    (void)module;
    /* Only what a server sends (exact lists and tuples of exact pairs, names bytes or str);
     * anything else is the loop's, which compares with == and unpacks as Python does. */
    int is_list = PyList_CheckExact(headers);
    if (!is_list && !PyTuple_CheckExact(headers))
        Py_RETURN_NONE;
    PyObject *found[3] = {NULL, NULL, NULL};
    static char const *const names[3] = {"authorization", "user-agent", "x-request-id"};
    static size_t const lengths[3] = {13, 10, 12};
    Py_ssize_t n = is_list ? PyList_Size(headers) : PyTuple_Size(headers);
    if (n < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = is_list ? PyList_GetItem(headers, i) : PyTuple_GetItem(headers, i);
        if (pair == NULL)
            return NULL;
        int pair_list = PyList_CheckExact(pair);
        if (!pair_list && !PyTuple_CheckExact(pair))
            Py_RETURN_NONE;
        if ((pair_list ? PyList_Size(pair) : PyTuple_Size(pair)) != 2)
            Py_RETURN_NONE;
        PyObject *name = pair_list ? PyList_GetItem(pair, 0) : PyTuple_GetItem(pair, 0);
        if (name == NULL)
            return NULL;
        if (PyUnicode_CheckExact(name))
            continue; /* (a str never equals bytes) */
        if (!PyBytes_CheckExact(name))
            Py_RETURN_NONE;
        char *p;
        Py_ssize_t pn;
        if (PyBytes_AsStringAndSize(name, &p, &pn) < 0)
            return NULL;
        for (int k = 0; k < 3; k++) {
            if ((size_t)pn == lengths[k] && memcmp(p, names[k], lengths[k]) == 0) {
                /* (as the loop: the first value that is not None) */
                if (found[k] == NULL || found[k] == Py_None) {
                    found[k] = pair_list ? PyList_GetItem(pair, 1) : PyTuple_GetItem(pair, 1);
                    if (found[k] == NULL)
                        return NULL;
                }
                break;
            }
        }
    }
    PyObject *out = PyTuple_New(3);
    if (out == NULL)
        return NULL;
    for (int k = 0; k < 3; k++) {
        PyObject *v = found[k] != NULL ? found[k] : Py_None;
        Py_INCREF(v);
        PyTuple_SetItem(out, k, v);
    }
    return out;
}


/* guard_known(memo, handle, route, token, key) -> (fields, claims), None, or a nonzero status:
 * guardcheck.py's _guard_call for a token in memo (the verified claims the runtime keeps per
 * token): the call of guard_request, and the claims when the token was accepted. None when
 * the token is not in memo (the caller makes the full call, which reads the claims). */
static PyObject *guard_known(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "guard_known(memo, handle, route, token, key)");
        return NULL;
    }
    if (!PyDict_Check(args[0]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "guard_known: memo must be a dict, token bytes");
        return NULL;
    }
    PyObject *claims = PyDict_GetItemWithError(args[0], args[3]);
    if (claims == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(claims); /* (held across the call, which releases the GIL) */
    PyObject *call_args[4] = {args[1], args[2], args[3], args[4]};
    PyObject *fields = guard_request(module, call_args, 4);
    if (fields == NULL || !PyTuple_Check(fields)) {
        Py_DECREF(claims);
        return fields; /* an error, or the nonzero status */
    }
    PyObject *reason = PyTuple_GetItem(fields, 2); /* token_reason: 0 when the token was accepted */
    long ok = PyLong_AsLong(reason) == 0;
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(claims);
        Py_DECREF(fields);
        return NULL;
    }
    PyTuple_SetItem(out, 0, fields);
    if (ok) {
        PyTuple_SetItem(out, 1, claims);
    } else {
        Py_DECREF(claims);
        Py_INCREF(Py_None);
        PyTuple_SetItem(out, 1, Py_None);
    }
    return out;
}

static PyObject *str_ok, *str_limit, *str_remaining, *str_reset, *bytes_limit, *bytes_remaining, *bytes_reset, *str_wire;

/* allowed(GuardResult, requirement, template, claims, fields): guard.py's _outcome of an
 * allowed decision on a route that takes a token (reason "ok"): GuardResult(True, 200, "ok",
 * requirement, template, claims, rate headers, _wire=the same as response header pairs). */
static PyObject *allowed(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5 || !PyTuple_Check(args[4]) || PyTuple_Size(args[4]) != 11) {
        PyErr_SetString(PyExc_TypeError, "allowed(GuardResult, requirement, template, claims, fields)");
        return NULL;
    }
    PyObject *fields = args[4];
    PyObject *result = NULL, *call_args = NULL, *kwargs = NULL, *headers = NULL, *wire = NULL;
    long rate_reason = PyLong_AsLong(PyTuple_GetItem(fields, 5));
    if (rate_reason == -1 && PyErr_Occurred())
        return NULL;
    PyObject *ok = str_ok;
    if (rate_reason == -1) { /* BITSEC_GUARD_NOT_CHECKED: no take, no headers */
        call_args = Py_BuildValue("(OiOOOO)", Py_True, 200, ok, args[1], args[2], args[3]);
        if (call_args != NULL)
            result = PyObject_Call(args[0], call_args, NULL);
        goto done;
    }
    headers = PyDict_New();
    wire = PyList_New(3);
    if (headers == NULL || wire == NULL)
        goto done;
    PyObject *const names[3] = {str_limit, str_remaining, str_reset};
    PyObject *const raw[3] = {bytes_limit, bytes_remaining, bytes_reset};
    for (int i = 0; i < 3; i++) {
        long long v = PyLong_AsLongLong(PyTuple_GetItem(fields, 6 + i));
        if (v == -1 && PyErr_Occurred())
            goto done;
        char num[32];
        snprintf(num, sizeof num, "%lld", v);
        PyObject *text = PyUnicode_FromString(num);
        if (text == NULL)
            goto done;
        int rc = PyDict_SetItem(headers, names[i], text);
        Py_DECREF(text);
        if (rc < 0)
            goto done;
        PyObject *pair = Py_BuildValue("(Oy)", raw[i], num);
        if (pair == NULL)
            goto done;
        PyList_SetItem(wire, i, pair);
    }
    call_args = Py_BuildValue("(OiOOOOO)", Py_True, 200, ok, args[1], args[2], args[3], headers);
    kwargs = call_args == NULL ? NULL : PyDict_New();
    if (kwargs == NULL || PyDict_SetItem(kwargs, str_wire, wire) < 0)
        goto done;
    result = PyObject_Call(args[0], call_args, kwargs);
done:
    Py_XDECREF(call_args);
    Py_XDECREF(kwargs);
    Py_XDECREF(headers);
    Py_XDECREF(wire);
    return result;
}

/* ---- Sender ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *send;       /* the inner send */
    PyObject *extra;      /* list of (bytes, bytes): the guard's headers */
    PyObject *audit_soon; /* callable, or None: no record from here */
    PyObject *args;       /* tuple: audit_soon's arguments, the status at status_at */
    PyObject *disabled;   /* set of disabled runtimes' ids */
    PyObject *runtime_id; /* int */
    Py_ssize_t status_at;
    int own_names; /* extra holds only the guard's own header names (else always compare) */
    int started;
} Sender;

static PyObject *str_type, *str_start, *str_headers, *str_status, *str_get, *str_lower;

/* The guard's header names (guard.py's _GUARD_HEADERS), lower case. */
static char const *const guard_names[] = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                                          "retry-after", "x-request-id"};

static int ascii_lower_equal(char const *a, Py_ssize_t an, char const *lower, size_t ln) {
    if ((size_t)an != ln)
        return 0;
    for (Py_ssize_t i = 0; i < an; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + ('a' - 'A'));
        if (c != lower[i])
            return 0;
    }
    return 1;
}

/* The name (item 0) of a header pair, a new reference; NULL with an exception set. */
static PyObject *pair_name(PyObject *pair) { return PySequence_GetItem(pair, 0); }

/* Whether a bytes name equals one of the guard's names, ignoring ASCII case. */
static int is_guard_name(PyObject *name) {
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(name, &p, &n) < 0)
        return -1;
    for (size_t i = 0; i < sizeof guard_names / sizeof guard_names[0]; i++)
        if (ascii_lower_equal(p, n, guard_names[i], strlen(guard_names[i])))
            return 1;
    return 0;
}

/* name.lower() as Python computes it (bytes, str or anything with .lower). */
static PyObject *lowered(PyObject *name) { return PyObject_CallMethodObjArgs(name, str_lower, NULL); }

/* existing += extra, or, when the application set one of the guard's names itself (or extra
 * holds other names), only the pairs of extra whose name the application did not set. As
 * guard.py: names compared lower-cased, bytes with bytes. */
static int merge_headers(Sender *self, PyObject *existing) {
    Py_ssize_t n = PyList_Size(existing);
    int clash = !self->own_names;
    int plain = 1; /* every name is bytes (else: Python's comparison, through .lower()) */
    for (Py_ssize_t i = 0; i < n && !clash && plain; i++) {
        PyObject *name = pair_name(PyList_GetItem(existing, i));
        if (name == NULL)
            return -1;
        if (PyBytes_Check(name)) {
            int g = is_guard_name(name);
            Py_DECREF(name);
            if (g < 0)
                return -1;
            clash = g;
        } else {
            Py_DECREF(name);
            plain = 0;
        }
    }
    if (!clash && !plain) { /* _GUARD_HEADERS.isdisjoint(map(_lower, map(_name, existing))) */
        for (Py_ssize_t i = 0; i < n && !clash; i++) {
            PyObject *name = pair_name(PyList_GetItem(existing, i));
            if (name == NULL)
                return -1;
            PyObject *low = lowered(name);
            Py_DECREF(name);
            if (low == NULL)
                return -1;
            int g = PyBytes_Check(low) ? is_guard_name(low) : 0;
            Py_DECREF(low);
            if (g < 0)
                return -1;
            clash = g;
        }
    }
    Py_ssize_t en = PyList_Size(self->extra);
    if (!clash) {
        for (Py_ssize_t i = 0; i < en; i++)
            if (PyList_Append(existing, PyList_GetItem(self->extra, i)) < 0)
                return -1;
        return 0;
    }
    /* names = {n.lower() for n, _ in existing}; existing += [(n, v) for n, v in extra if n not in names] */
    PyObject *names = PySet_New(NULL);
    if (names == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GetItem(existing, i);
        Py_ssize_t size = PySequence_Size(pair); /* (Python unpacks each pair: n, _ = pair) */
        if (size < 0)
            goto fail;
        if (size != 2) {
            if (size < 2)
                PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %zd)", size);
            else
                PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
            goto fail;
        }
        PyObject *name = pair_name(pair);
        if (name == NULL)
            goto fail;
        PyObject *low = lowered(name);
        Py_DECREF(name);
        if (low == NULL)
            goto fail;
        int rc = PySet_Add(names, low);
        Py_DECREF(low);
        if (rc < 0)
            goto fail;
    }
    for (Py_ssize_t i = 0; i < en; i++) {
        PyObject *pair = PyList_GetItem(self->extra, i);
        PyObject *name = pair_name(pair);
        if (name == NULL)
            goto fail;
        int seen = PySet_Contains(names, name);
        Py_DECREF(name);
        if (seen < 0)
            goto fail;
        if (!seen && PyList_Append(existing, pair) < 0)
            goto fail;
    }
    Py_DECREF(names);
    return 0;
fail:
    Py_DECREF(names);
    return -1;
}

/* The response's start: a copy of the message with the guard's headers, and the record. */
static PyObject *on_start(Sender *self, PyObject *message) {
    PyObject *copy = NULL, *headers = NULL, *existing = NULL, *result = NULL;
    /* existing = list(message.get("headers", ())) */
    if (PyDict_Check(message)) {
        headers = PyDict_GetItemWithError(message, str_headers);
        if (headers == NULL && PyErr_Occurred())
            return NULL;
        Py_XINCREF(headers);
    } else {
        PyObject *empty = PyTuple_New(0);
        if (empty == NULL)
            return NULL;
        headers = PyObject_CallMethodObjArgs(message, str_get, str_headers, empty, NULL);
        Py_DECREF(empty);
        if (headers == NULL)
            return NULL;
    }
    existing = headers == NULL ? PyList_New(0) : PySequence_List(headers);
    Py_XDECREF(headers);
    if (existing == NULL)
        return NULL;
    /* message = dict(message) */
    copy = PyDict_New();
    if (copy == NULL || PyDict_Merge(copy, message, 1) < 0)
        goto done;
    if (PyList_Size(existing) > 0) {
        if (merge_headers(self, existing) < 0 || PyDict_SetItem(copy, str_headers, existing) < 0)
            goto done;
    } else if (PyDict_SetItem(copy, str_headers, self->extra) < 0) {
        goto done;
    }
    if (self->audit_soon != Py_None) {
        int off = PySet_Contains(self->disabled, self->runtime_id);
        if (off < 0)
            goto done;
        if (!off) {
            PyObject *status = PyObject_GetItem(copy, str_status); /* message["status"] */
            if (status == NULL)
                goto done;
            Py_ssize_t an = PyTuple_Size(self->args);
            PyObject *call_args = PyTuple_New(an);
            if (call_args == NULL) {
                Py_DECREF(status);
                goto done;
            }
            for (Py_ssize_t i = 0; i < an; i++) {
                PyObject *v = i == self->status_at ? status : PyTuple_GetItem(self->args, i);
                Py_INCREF(v);
                PyTuple_SetItem(call_args, i, v);
            }
            Py_DECREF(status);
            PyObject *r = PyObject_CallObject(self->audit_soon, call_args);
            Py_DECREF(call_args);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    }
    result = PyObject_CallFunctionObjArgs(self->send, copy, NULL);
done:
    Py_XDECREF(copy);
    Py_DECREF(existing);
    return result;
}

static PyObject *Sender_call(PyObject *op, PyObject *args, PyObject *kwargs) {
    Sender *self = (Sender *)op;
    if (kwargs != NULL && PyDict_Size(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Sender takes one message");
        return NULL;
    }
    if (PyTuple_Size(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "Sender takes one message");
        return NULL;
    }
    PyObject *message = PyTuple_GetItem(args, 0);
    if (!self->started) {
        PyObject *kind = PyObject_GetItem(message, str_type); /* message["type"] */
        if (kind == NULL)
            return NULL;
        int start = PyObject_RichCompareBool(kind, str_start, Py_EQ);
        Py_DECREF(kind);
        if (start < 0)
            return NULL;
        if (start) {
            self->started = 1;
            return on_start(self, message);
        }
    }
    return PyObject_CallFunctionObjArgs(self->send, message, NULL);
}

static PyTypeObject *sender_type; /* set at import */

/* sender(send, extra, own_names, audit_soon, args, status_at, disabled, runtime_id): a new Sender. */
static PyObject *new_sender(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "sender(send, extra, own_names, audit_soon, args, status_at, disabled, runtime_id)");
        return NULL;
    }
    PyObject *extra = args[1], *audit_soon = args[3], *call_args = args[4], *disabled = args[6];
    if (!PyList_Check(extra) || !PyTuple_Check(call_args) || !PySet_Check(disabled)) {
        PyErr_SetString(PyExc_TypeError, "sender: extra must be a list, args a tuple, disabled a set");
        return NULL;
    }
    int own_names = PyObject_IsTrue(args[2]);
    if (own_names < 0)
        return NULL;
    Py_ssize_t status_at = PyLong_AsSsize_t(args[5]);
    if (status_at == -1 && PyErr_Occurred())
        return NULL;
    if (audit_soon != Py_None && (status_at < 0 || status_at >= PyTuple_Size(call_args))) {
        PyErr_SetString(PyExc_ValueError, "sender: status_at is not an index of args");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(sender_type, Py_tp_alloc);
    Sender *self = (Sender *)alloc(sender_type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(args[0]);
    Py_INCREF(extra);
    Py_INCREF(audit_soon);
    Py_INCREF(call_args);
    Py_INCREF(disabled);
    Py_INCREF(args[7]);
    self->send = args[0];
    self->extra = extra;
    self->audit_soon = audit_soon;
    self->args = call_args;
    self->disabled = disabled;
    self->runtime_id = args[7];
    self->status_at = status_at;
    self->own_names = own_names;
    self->started = 0;
    return (PyObject *)self;
}

static int Sender_traverse(PyObject *op, visitproc visit, void *arg) {
    Sender *self = (Sender *)op;
    Py_VISIT(self->send);
    Py_VISIT(self->extra);
    Py_VISIT(self->audit_soon);
    Py_VISIT(self->args);
    Py_VISIT(self->disabled);
    Py_VISIT(self->runtime_id);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static int Sender_clear(PyObject *op) {
    Sender *self = (Sender *)op;
    Py_CLEAR(self->send);
    Py_CLEAR(self->extra);
    Py_CLEAR(self->audit_soon);
    Py_CLEAR(self->args);
    Py_CLEAR(self->disabled);
    Py_CLEAR(self->runtime_id);
    return 0;
}

static void Sender_dealloc(PyObject *op) {
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Sender_clear(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(op);
    Py_DECREF(tp);
}

static PyObject *Sender_get_started(PyObject *op, void *closure) {
    (void)closure;
    return PyBool_FromLong(((Sender *)op)->started);
}

static PyGetSetDef Sender_getset[] = {
    {"started", Sender_get_started, NULL, "whether an http.response.start went through", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Sender_slots[] = {
    {Py_tp_doc, "The guard's ASGI send wrapper (bitsec.fastapi.GuardMiddleware)."},
    {Py_tp_call, Sender_call},
    {Py_tp_traverse, Sender_traverse},
    {Py_tp_clear, Sender_clear},
    {Py_tp_dealloc, Sender_dealloc},
    {Py_tp_getset, Sender_getset},
    {0, NULL},
};

static PyType_Spec Sender_spec = {
    "bitsec._speedups.Sender", sizeof(Sender), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION, Sender_slots,
};


/* ---- record ------------------------------------------------------------------------------ */

/* Set once by record_setup: the state key of the verified claims, and the lengths beyond
 * which guard.py's record cuts a value (those records are Python's). */
static PyObject *claims_key;
static Py_ssize_t path_cut = -1, text_cut = -1;
static PyObject *str_path, *str_method, *str_heads, *str_sensitive, *str_param_members, *str_ip_members,
    *str_ua_members, *str_client_ip, *str_state_key, *str_audit_members;

static PyObject *record_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "record_setup(claims_key, path_cut, text_cut)");
        return NULL;
    }
    Py_ssize_t pc = PyLong_AsSsize_t(args[1]), tc = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(args[0]);
    Py_XDECREF(claims_key);
    claims_key = args[0];
    path_cut = pc;
    text_cut = tc;
    Py_RETURN_NONE;
}

typedef struct {
    char *p;
    size_t n, cap;
    char local[1024];
} text_buf;

static int buf_reserve(text_buf *b, size_t more) {
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap * 2;
    while (cap < b->n + more)
        cap *= 2;
    char *p = b->p == b->local ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->local)
        memcpy(p, b->local, b->n);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(text_buf *b, char const *s, size_t n) {
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* A str's UTF-8 bytes appended as they are (the record's parts guard.py wrote as JSON). */
/* A str with no UTF-8 form (a lone surrogate): 0 with no error set, the record is Python's
 * (which replaces it); another error: -1. */
static int no_utf8(void) {
    if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* A str's UTF-8 bytes appended as they are (the record's parts guard.py wrote as JSON): 1
 * written, 0 no UTF-8 form (Python's), -1 error. */
static int buf_add_str(text_buf *b, PyObject *s) {
    Py_ssize_t n;
    char const *p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p == NULL)
        return no_utf8();
    return buf_add(b, p, (size_t)n) < 0 ? -1 : 1;
}

/* json.encoder.encode_basestring_ascii of an ASCII str: 1 written, 0 not ASCII (the record
 * is Python's), -1 error. */
static int buf_add_quoted(text_buf *b, PyObject *s) {
    Py_ssize_t n;
    char const *p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p == NULL)
        return no_utf8();
    if (buf_reserve(b, (size_t)n * 6 + 2) < 0)
        return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x80)
            return 0;
        if (c >= ' ' && c != 0x7f && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default: {
            static char const hex[] = "0123456789abcdef";
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        }
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
    return 1;
}

/* A borrowed value of a dict by key, NULL when absent (an error is still an error). */
static PyObject *dict_get(PyObject *d, PyObject *key) {
    if (!PyDict_Check(d))
        return NULL;
    return PyDict_GetItemWithError(d, key);
}

/* An attribute (new reference), NULL when absent: no error either way but a real one. */
static PyObject *attr(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
        PyErr_Clear();
    return v;
}

/* guard.py's GuardMiddleware._record_text for the common record: a data_access record of a
 * response that is not a refusal, every value ASCII and under its cut, every part already
 * written once (per route and method, per claims object, per address, per user agent, per
 * parameter name). Any other record is fallback's (guard.py's _record_text, the same text:
 * tests/test_speedups.py compares them), called with the same arguments. */
static PyObject *record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "record(fallback, guard, entry, scope, state, status, rid, ua, params)");
        return NULL;
    }
    PyObject *fallback = args[0], *self = args[1], *entry = args[2], *scope = args[3], *state = args[4],
             *status = args[5], *rid = args[6], *ua = args[7], *params = args[8];
    /* Every borrowed value this keeps across a call that may run Python code (an attribute
     * read) is held: path, method, heads, pk, pv, claims, addr. */
    PyObject *heads_map = NULL, *sensitive = NULL, *members = NULL, *claims = NULL, *cm = NULL, *resolver = NULL,
             *skey = NULL, *result = NULL, *path = NULL, *method = NULL, *heads = NULL, *pk = NULL, *pv = NULL,
             *addr = NULL;
    text_buf b;
    b.p = b.local;
    b.n = 0;
    b.cap = sizeof b.local;
    if (claims_key == NULL || !PyDict_Check(scope) || !PyDict_Check(state) || !PyLong_CheckExact(status)
        || !PyUnicode_Check(rid) || !PyDict_Check(params))
        goto fallback;
    int overflow = 0;
    long st = PyLong_AsLongAndOverflow(status, &overflow);
    if (st == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || st == 401 || st == 403 || st == 400 || st < 100 || st > 999)
        goto fallback;
    if (ua != Py_None && (!PyBytes_Check(ua) || PyBytes_Size(ua) > text_cut))
        goto fallback;
    path = dict_get(scope, str_path);
    Py_XINCREF(path);
    if (path == NULL || !PyUnicode_Check(path) || PyUnicode_GetLength(path) > path_cut)
        goto fallback;
    method = dict_get(scope, str_method);
    Py_XINCREF(method);
    if (method == NULL)
        goto fallback;
    heads_map = attr(entry, str_heads);
    if (heads_map == NULL)
        goto fallback;
    heads = dict_get(heads_map, method);
    Py_XINCREF(heads);
    if (heads == NULL || !PyTuple_Check(heads) || PyTuple_Size(heads) != 5)
        goto fallback;
    PyObject *data = PyTuple_GetItem(heads, 0);
    if (!PyUnicode_Check(data) || PyUnicode_GetLength(data) == 0)
        goto fallback; /* no data_access record for this method: Python's */
    sensitive = attr(self, str_sensitive);
    if (sensitive == NULL || sensitive != Py_None)
        goto fallback;
    PyObject *out = PyTuple_GetItem(heads, st < 400 ? 3 : 4);
    PyObject *method_member = PyTuple_GetItem(heads, 2);
    if (!PyUnicode_Check(out) || !PyUnicode_Check(method_member) || buf_add_str(&b, out) <= 0)
        goto fallback_or_error;
    /* ,"resource_id":..., and the path_params member (written at the end) */
    Py_ssize_t np = PyDict_Size(params);
    if (np == 1) {
        Py_ssize_t pos = 0;
        PyObject *name = NULL;
        PyDict_Next(params, &pos, &name, &pv);
        Py_INCREF(pv);
        Py_INCREF(name);
        if (!PyUnicode_Check(pv) || PyUnicode_GetLength(pv) > text_cut) {
            Py_DECREF(name);
            goto fallback;
        }
        members = attr(self, str_param_members);
        if (members == NULL) {
            Py_DECREF(name);
            goto fallback;
        }
        pk = dict_get(members, name);
        Py_DECREF(name);
        Py_XINCREF(pk);
        if (pk == NULL || !PyUnicode_Check(pk))
            goto fallback;
        if (buf_add(&b, ",\"resource_id\":", 15) < 0)
            goto error;
        int q = buf_add_quoted(&b, pv);
        if (q <= 0)
            goto fallback_or_error;
    } else if (np != 0) {
        goto fallback;
    }
    /* the claims' members, written once per claims object */
    claims = dict_get(state, claims_key);
    Py_XINCREF(claims);
    if (claims == NULL || claims == Py_None)
        goto fallback; /* (a session's record: Python's) */
    cm = attr(claims, str_audit_members);
    if (cm == NULL || !PyUnicode_Check(cm) || buf_add_str(&b, cm) <= 0)
        goto fallback_or_error;
    /* the ip member, per address; the user agent's, per header value */
    resolver = attr(self, str_client_ip);
    if (resolver == NULL)
        goto fallback;
    skey = attr(resolver, str_state_key);
    if (skey == NULL)
        goto fallback;
    addr = dict_get(state, skey);
    Py_XINCREF(addr);
    if (addr == NULL)
        goto fallback;
    Py_CLEAR(members);
    members = attr(self, str_ip_members);
    if (members == NULL)
        goto fallback;
    PyObject *ipm = dict_get(members, addr);
    if (ipm == NULL || !PyUnicode_Check(ipm) || buf_add_str(&b, ipm) <= 0)
        goto fallback_or_error;
    if (ua != Py_None) {
        Py_CLEAR(members);
        members = attr(self, str_ua_members);
        if (members == NULL)
            goto fallback;
        PyObject *uam = dict_get(members, ua);
        if (uam == NULL || !PyUnicode_Check(uam) || buf_add_str(&b, uam) <= 0)
            goto fallback_or_error;
    }
    if (buf_add(&b, ",\"details\":{\"request_id\":", 25) < 0)
        goto error;
    int q = buf_add_quoted(&b, rid);
    if (q <= 0)
        goto fallback_or_error;
    if (buf_add_str(&b, method_member) <= 0)
        goto fallback_or_error;
    q = buf_add_quoted(&b, path);
    if (q <= 0)
        goto fallback_or_error;
    char num[32];
    int nn = snprintf(num, sizeof num, ",\"status\":%ld", st);
    if (buf_add(&b, num, (size_t)nn) < 0)
        goto error;
    if (pk != NULL) {
        if (buf_add_str(&b, pk) <= 0 || buf_add_quoted(&b, pv) <= 0 || buf_add(&b, "}", 1) < 0)
            goto fallback_or_error;
    }
    if (buf_add(&b, "}}", 2) < 0)
        goto error;
    result = PyUnicode_DecodeUTF8(b.p, (Py_ssize_t)b.n, "strict");
    goto done;
fallback_or_error:
    if (PyErr_Occurred())
        goto error;
fallback:
    if (PyErr_Occurred())
        goto error;
    /* the record guard.py writes: fallback(entry, scope, state, status, rid, ua, params) */
    result = PyObject_CallFunctionObjArgs(fallback, entry, scope, state, status, rid, ua, params, NULL);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(path);
    Py_XDECREF(method);
    Py_XDECREF(heads);
    Py_XDECREF(pk);
    Py_XDECREF(pv);
    Py_XDECREF(claims);
    Py_XDECREF(addr);
    Py_XDECREF(heads_map);
    Py_XDECREF(sensitive);
    Py_XDECREF(members);
    Py_XDECREF(cm);
    Py_XDECREF(resolver);
    Py_XDECREF(skey);
    if (b.p != b.local)
        PyMem_Free(b.p);
    return result;
}

/* ---- module ------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"sender", (PyCFunction)(void (*)(void))new_sender, METH_FASTCALL,
     "sender(send, extra, own_names, audit_soon, args, status_at, disabled, runtime_id): a new Sender."},
    {"scan", scan, METH_O, "scan(headers) -> (authorization, user_agent, x_request_id), or None: Python's loop."},
    {"guard_known", (PyCFunction)(void (*)(void))guard_known, METH_FASTCALL,
     "guard_known(memo, handle, route, token, key) -> (fields, claims), None (not in memo), or a nonzero status."},
    {"allowed", (PyCFunction)(void (*)(void))allowed, METH_FASTCALL,
     "allowed(GuardResult, requirement, template, claims, fields) -> an allowed GuardResult."},
    {"bind_guard", bind_guard, METH_O, "bind_guard(address): bitsec_guard_check_request's address."},
    {"guard_request", (PyCFunction)(void (*)(void))guard_request, METH_FASTCALL,
     "guard_request(handle, route, token, key) -> fields tuple, or a nonzero status."},
    {"record_setup", (PyCFunction)(void (*)(void))record_setup, METH_FASTCALL,
     "record_setup(claims_key, path_cut, text_cut): the constants of record."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(fallback, guard, entry, scope, state, status, rid, ua, params) -> the record's text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "bitsec._speedups", "bitsec.fastapi's guard steps in compiled code (optional).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (str_type == NULL) {
        /* (made together, kept only when all were made: a failed import leaves none) */
        PyObject *made[24] = {
            PyUnicode_InternFromString("type"),
            PyUnicode_InternFromString("http.response.start"),
            PyUnicode_InternFromString("headers"),
            PyUnicode_InternFromString("status"),
            PyUnicode_InternFromString("get"),
            PyUnicode_InternFromString("lower"),
            PyUnicode_InternFromString("path"),
            PyUnicode_InternFromString("method"),
            PyUnicode_InternFromString("heads"),
            PyUnicode_InternFromString("sensitive"),
            PyUnicode_InternFromString("_param_members"),
            PyUnicode_InternFromString("_ip_members"),
            PyUnicode_InternFromString("_ua_members"),
            PyUnicode_InternFromString("client_ip"),
            PyUnicode_InternFromString("state_key"),
            PyUnicode_InternFromString("_audit_members"),
            PyUnicode_InternFromString("ok"),
            PyUnicode_InternFromString("X-RateLimit-Limit"),
            PyUnicode_InternFromString("X-RateLimit-Remaining"),
            PyUnicode_InternFromString("X-RateLimit-Reset"),
            PyBytes_FromString("x-ratelimit-limit"),
            PyBytes_FromString("x-ratelimit-remaining"),
            PyBytes_FromString("x-ratelimit-reset"),
            PyUnicode_InternFromString("_wire"),
        };
        for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
            if (made[i] == NULL) {
                for (size_t j = 0; j < sizeof made / sizeof made[0]; j++)
                    Py_XDECREF(made[j]);
                return NULL;
            }
        }
        PyObject **const targets[] = {
            &str_type, &str_start, &str_headers, &str_status, &str_get, &str_lower, &str_path, &str_method,
            &str_heads, &str_sensitive, &str_param_members, &str_ip_members, &str_ua_members, &str_client_ip,
            &str_state_key, &str_audit_members, &str_ok, &str_limit, &str_remaining, &str_reset,
            &bytes_limit, &bytes_remaining, &bytes_reset, &str_wire
        };
        for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
            *targets[i] = made[i];
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *sender = PyType_FromSpec(&Sender_spec);
    if (sender == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(sender);
    sender_type = (PyTypeObject *)sender; /* (kept for the process: the module is never unloaded) */
    if (PyModule_AddObject(module, "Sender", sender) < 0) {
        Py_DECREF(sender);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "REQUEST_BYTES", (long)sizeof(guard_request_t)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
