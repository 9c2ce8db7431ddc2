/* The compiled hot path of Experiment.log_metric.
 *
 * HotPath is Experiment's base class. It holds the five attributes log_metric reads (the
 * checked names, the buffer, its capacity, the current iteration and the append) as slots,
 * and log_metric does in C what the pure-Python Experiment._log_metric_checked does on its
 * fast path: a plain float, a str name checked before, an int step in range and room in
 * the buffer append (name, value, step, time.time()) and return. Anything else (a first
 * name, a tensor, a bad step, a full buffer, a keyword other than iteration or step) is
 * handed whole to _log_metric_checked, which checks, converts, waits or raises. Both paths
 * queue the same record, and the tests run every log_metric case through both.
 *
 * Every object read from a slot is held by a reference of our own while it is used:
 * Python code can run in between (a buffer's __len__, a finalizer started by the garbage
 * collector, another thread given the GIL) and reassign the slot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* MAX_STEP in tracelet.values: the largest step every backend stores (int64). */
#define MAX_STEP 9223372036854775807LL

typedef struct {
    PyObject_HEAD
    PyObject *checked_names; /* a set of str */
    PyObject *buffer;        /* what len() is taken of */
    PyObject *iteration;     /* an int */
    PyObject *append_metric; /* called with the point */
    Py_ssize_t capacity;
} HotPath;

static PyObject *slow_path_name; /* "_log_metric_checked" */
static PyObject *iteration_name; /* "iteration" */
static PyObject *step_name;      /* "step" */

/* time.time(): the same clock and conversion, through CPython's own functions. */
static PyObject *
now(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    if (PyTime_Time(&t) < 0) {
        return NULL;
    }
    return PyFloat_FromDouble(PyTime_AsSecondsDouble(t));
#else
    return PyFloat_FromDouble(_PyTime_AsSecondsDouble(_PyTime_GetSystemClock()));
#endif
}

static int
is_name(PyObject *key, PyObject *name)
{
    return key == name || (PyUnicode_Check(key) && PyUnicode_Compare(key, name) == 0);
}

static PyObject *
slow_path(HotPath *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *method = PyObject_GetAttr((PyObject *)self, slow_path_name);
    if (method == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(method, args, nargs, kwnames);
    Py_DECREF(method);
    return result;
}

/* The step given as iteration= or step= (at most one, by keyword or position), else the
 * current iteration, as a new reference; NULL when the call is not one the fast path
 * takes (no exception set). */
static PyObject *
given_step(HotPath *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *iteration = nargs > 2 ? args[2] : NULL;
    PyObject *step = nargs > 3 ? args[3] : NULL;
    Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < keywords; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot;
        if (is_name(key, step_name)) {
            slot = &step;
        }
        else if (is_name(key, iteration_name)) {
            slot = &iteration;
        }
        else {
            return NULL;
        }
        if (*slot != NULL) {
            return NULL; /* given twice: the slow path raises */
        }
        *slot = args[nargs + i];
    }
    if (iteration == Py_None) {
        iteration = NULL;
    }
    if (step == Py_None) {
        step = NULL;
    }
    if (iteration != NULL && step != NULL) {
        return NULL;
    }
    if (iteration == NULL) {
        iteration = step != NULL ? step : self->iteration;
    }
    if (iteration == NULL || !PyLong_CheckExact(iteration)) {
        return NULL;
    }
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(iteration, &overflow);
    if (overflow || value < 0 || value > MAX_STEP) {
        return NULL;
    }
    Py_INCREF(iteration);
    return iteration;
}

/* 1 when name is in the checked names (a set), 0 when not (or they are not exactly a set
 * or a frozenset: a subclass's own __contains__ is for the Python path), -1 on an error. */
static int
is_checked(HotPath *self, PyObject *name)
{
    PyObject *names = self->checked_names;
    if (names == NULL || !(PySet_CheckExact(names) || PyFrozenSet_CheckExact(names))) {
        return 0;
    }
    Py_INCREF(names);
    int found = PySet_Contains(names, name);
    Py_DECREF(names);
    return found;
}

/* 1 when the buffer has room, 0 when it is full (or unknown), -1 on an error. */
static int
has_room(HotPath *self)
{
    PyObject *buffer = self->buffer;
    if (buffer == NULL) {
        return 0;
    }
    Py_INCREF(buffer);
    Py_ssize_t length = PyObject_Size(buffer);
    Py_DECREF(buffer);
    if (length < 0) {
        return -1;
    }
    return length < self->capacity;
}

PyDoc_STRVAR(log_metric_doc,
"log_metric($self, /, name, value, iteration=None, step=None)\n--\n\n"
"Log one scalar. The step is ``iteration`` (or ``step=``), else the current iteration.");

static PyObject *
log_metric(HotPath *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || nargs > 4) {
        return slow_path(self, args, nargs, kwnames);
    }
    PyObject *name = args[0], *value = args[1];
    if (!PyFloat_CheckExact(value) || !PyUnicode_CheckExact(name)) {
        return slow_path(self, args, nargs, kwnames);
    }
    int known = is_checked(self, name);
    if (known < 0) {
        return NULL;
    }
    PyObject *step = known ? given_step(self, args, nargs, kwnames) : NULL;
    if (step == NULL) {
        return slow_path(self, args, nargs, kwnames);
    }
    int room = has_room(self);
    if (room <= 0) {
        Py_DECREF(step);
        return room < 0 ? NULL : slow_path(self, args, nargs, kwnames);
    }
    PyObject *stamp = now();
    if (stamp == NULL) {
        Py_DECREF(step);
        return NULL;
    }
    PyObject *point = PyTuple_Pack(4, name, value, step, stamp);
    Py_DECREF(stamp);
    Py_DECREF(step);
    if (point == NULL) {
        return NULL;
    }
    /* An exact str, float, int and float: the point can be in no cycle, so the collector
     * need not look at it. Tracked, each point was walked once, by the young collection
     * after it was made (which then untracks such a tuple): at 200,000 points a second,
     * 250 collections a second of about 700 points each, 25 us apiece inside a call. */
    PyObject_GC_UnTrack(point);
    PyObject *append = self->append_metric;
    if (append == NULL) {
        Py_DECREF(point);
        return slow_path(self, args, nargs, kwnames);
    }
    Py_INCREF(append);
    PyObject *result = PyObject_CallOneArg(append, point);
    Py_DECREF(append);
    Py_DECREF(point);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyMethodDef hot_path_methods[] = {
    {"log_metric", (PyCFunction)(void (*)(void))log_metric, METH_FASTCALL | METH_KEYWORDS,
     log_metric_doc},
    {NULL},
};

static PyMemberDef hot_path_members[] = {
    {"_checked_names", T_OBJECT_EX, offsetof(HotPath, checked_names), 0,
     "Metric names already checked (a set)."},
    {"_buffer", T_OBJECT_EX, offsetof(HotPath, buffer), 0, "The queue metric points go to."},
    {"_iteration", T_OBJECT_EX, offsetof(HotPath, iteration), 0,
     "The step of calls that give none."},
    {"_append_metric", T_OBJECT_EX, offsetof(HotPath, append_metric), 0,
     "Queues one metric point."},
    {"_capacity", T_PYSSIZET, offsetof(HotPath, capacity), 0,
     "The most points the buffer holds before log_metric waits."},
    {NULL},
};

static int
hot_path_traverse(HotPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->checked_names);
    Py_VISIT(self->buffer);
    Py_VISIT(self->iteration);
    Py_VISIT(self->append_metric);
    return 0;
}

static int
hot_path_clear(HotPath *self)
{
    Py_CLEAR(self->checked_names);
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->iteration);
    Py_CLEAR(self->append_metric);
    return 0;
}

static void
hot_path_dealloc(HotPath *self)
{
    PyObject_GC_UnTrack(self);
    hot_path_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject HotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracelet.core._hotpath.HotPath",
    .tp_doc = PyDoc_STR("Experiment's base: log_metric's fast path, compiled."),
    .tp_basicsize = sizeof(HotPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)hot_path_dealloc,
    .tp_traverse = (traverseproc)hot_path_traverse,
    .tp_clear = (inquiry)hot_path_clear,
    .tp_methods = hot_path_methods,
    .tp_members = hot_path_members,
};

static struct PyModuleDef hot_path_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tracelet.core._hotpath",
    .m_doc = "The compiled fast path of Experiment.log_metric (optional: a pure-Python one "
             "does the same where this is not built).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    slow_path_name = PyUnicode_InternFromString("_log_metric_checked");
    iteration_name = PyUnicode_InternFromString("iteration");
    step_name = PyUnicode_InternFromString("step");
    if (slow_path_name == NULL || iteration_name == NULL || step_name == NULL) {
        return NULL;
    }
    if (PyType_Ready(&HotPathType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&hot_path_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&HotPathType);
    if (PyModule_AddObject(module, "HotPath", (PyObject *)&HotPathType) < 0) {
        Py_DECREF(&HotPathType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
