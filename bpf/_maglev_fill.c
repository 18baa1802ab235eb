/* The fill loop of bpf/maglev.py's maglev_table, in C: the same table, about a hundred times sooner.
 *
 * fill(walkers, size) -> bytes
 *   walkers: a buffer of int64, four per backend in turn order: index, turns per round, first slot, skip
 *   (maglev.py computes them, and checks them: 1 <= turns, 0 <= slot < size, 1 <= skip < size, index < 65536).
 *   Returns size native uint16 entries, each the index of the backend holding that slot.
 *
 * The GIL is released while filling, so tables built in a thread leave the event loop alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int fill_table(const int64_t *walkers, Py_ssize_t count, Py_ssize_t size, uint16_t *entry)
{
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)count);
    uint8_t *taken = calloc((size_t)size, 1);
    if (slots == NULL || taken == NULL) {
        free(slots);
        free(taken);
        return -1;
    }
    for (Py_ssize_t w = 0; w < count; w++)
        slots[w] = walkers[4 * w + 2];
    Py_ssize_t filled = 0;
    while (filled < size) {
        for (Py_ssize_t w = 0; w < count && filled < size; w++) {
            const int64_t index = walkers[4 * w], turns = walkers[4 * w + 1], skip = walkers[4 * w + 3];
            int64_t slot = slots[w];
            for (int64_t turn = 0; turn < turns && filled < size; turn++) {
                while (taken[slot]) {
                    slot += skip;
                    if (slot >= size)
                        slot -= size;
                }
                taken[slot] = 1;
                entry[slot] = (uint16_t)index;
                slot += skip;
                if (slot >= size)
                    slot -= size;
                filled++;
            }
            slots[w] = slot;
        }
    }
    free(slots);
    free(taken);
    return 0;
}

static PyObject *fill(PyObject *self, PyObject *args)
{
    Py_buffer walkers;
    Py_ssize_t size;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n", &walkers, &size))
        return NULL;
    Py_ssize_t count = walkers.len / (Py_ssize_t)sizeof(int64_t) / 4;
    if (walkers.itemsize != sizeof(int64_t) || count < 1 || walkers.len != count * 4 * (Py_ssize_t)sizeof(int64_t)
        || size < 1) {
        PyBuffer_Release(&walkers);
        PyErr_SetString(PyExc_ValueError, "fill: walkers must be int64, four per backend, and size positive");
        return NULL;
    }
    const int64_t *w = walkers.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (w[4 * i] < 0 || w[4 * i] > UINT16_MAX || w[4 * i + 1] < 1 || w[4 * i + 2] < 0 || w[4 * i + 2] >= size
            || w[4 * i + 3] < 1 || w[4 * i + 3] >= size) {
            PyBuffer_Release(&walkers);
            PyErr_SetString(PyExc_ValueError, "fill: a walker is out of range");
            return NULL;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size * (Py_ssize_t)sizeof(uint16_t));
    if (out == NULL) {
        PyBuffer_Release(&walkers);
        return NULL;
    }
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = fill_table(w, count, size, (uint16_t *)PyBytes_AS_STRING(out));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&walkers);
    if (failed) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return out;
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS, "fill(walkers, size) -> bytes: the Maglev table's entries, native uint16."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bpf._maglev_fill", "The Maglev fill loop in C (see bpf/maglev.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__maglev_fill(void)
{
    return PyModule_Create(&module);
}
