/* The fill loop of bpf/maglev.py's maglev_table, in C: the same table, about a hundred times sooner.
 *
 * fill(walkers, size) -> bytes
 *   walkers: a buffer of int64, four per backend in turn order: index, turns per round, first slot, skip
 *   (maglev.py computes them, and checks them: 1 <= turns, 0 <= slot < size, 1 <= skip < size, index < 65536).
 *   Returns size native uint16 entries, each the index of the backend holding that slot.
 *
 * place(table, slots) -> (bytes, list)
 *   table: native uint16 entries as fill returns them; slots: native uint32, the data-plane slot of each index.
 *   Returns the table as the kernel's array map shows it through mmap (each entry its slot, as a native uint64:
 *   values sit 8 bytes apart) and how many entries each index holds. maglev.place does the same in Python.
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

static PyObject *place(PyObject *self, PyObject *args)
{
    Py_buffer table, slots;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*", &table, &slots))
        return NULL;
    Py_ssize_t size = table.len / (Py_ssize_t)sizeof(uint16_t), count = slots.len / (Py_ssize_t)sizeof(uint32_t);
    const uint16_t *entry = table.buf;
    const uint32_t *slot = slots.buf;
    PyObject *out = NULL, *counts = NULL;
    Py_ssize_t *held = NULL;
    if (table.itemsize != sizeof(uint16_t) || slots.itemsize != sizeof(uint32_t)) {
        PyErr_SetString(PyExc_ValueError, "place: table must be uint16 and slots uint32");
        goto done;
    }
    held = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    out = PyBytes_FromStringAndSize(NULL, size * (Py_ssize_t)sizeof(uint64_t));
    if (held == NULL || out == NULL) {
        Py_CLEAR(out);
        if (held == NULL)
            PyErr_NoMemory();
        goto done;
    }
    uint64_t *placed = (uint64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (entry[i] >= count) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, "place: an entry has no slot");
            goto done;
        }
        placed[i] = slot[entry[i]];
        held[entry[i]]++;
    }
    counts = PyList_New(count);
    if (counts == NULL) {
        Py_CLEAR(out);
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *number = PyLong_FromSsize_t(held[i]);
        if (number == NULL) {
            Py_CLEAR(out);
            Py_CLEAR(counts);
            goto done;
        }
        PyList_SET_ITEM(counts, i, number);
    }
done:
    PyMem_Free(held);
    PyBuffer_Release(&table);
    PyBuffer_Release(&slots);
    if (out == NULL)
        return NULL;
    PyObject *result = PyTuple_Pack(2, out, counts);
    Py_DECREF(out);
    Py_DECREF(counts);
    return result;
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS, "fill(walkers, size) -> bytes: the Maglev table's entries, native uint16."},
    {"place", place, METH_VARARGS, "place(table, slots) -> (bytes, list): entries as slots (uint64), and counts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bpf._maglev_fill", "The Maglev fill loop in C (see bpf/maglev.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__maglev_fill(void)
{
    return PyModule_Create(&module);
}
