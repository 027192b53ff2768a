# rank.py's C-level imports (Cython reads this beside it).
from iptraf_mp.core.tcptable cimport Pair

cdef extern from *:
    """
    #define _borrowed_item(list, i) ((void *)PyList_GET_ITEM((list), (i)))
    #define _set_borrowed_item(list, i, p) PyList_SET_ITEM((list), (i), (PyObject *)(p))
    """
    void *_borrowed_item(list rows, Py_ssize_t i)
    void _set_borrowed_item(list rows, Py_ssize_t i, void *p)
