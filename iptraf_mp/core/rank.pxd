# rank.py's C-level imports (Cython reads this beside it).
from iptraf_mp.core.tcptable cimport Pair

cdef extern from *:
    """
    #define _borrowed_item(list, i) ((void *)PyList_GET_ITEM((list), (i)))
    #define _set_borrowed_item(list, i, p) PyList_SET_ITEM((list), (i), (PyObject *)(p))
    """
    void *_borrowed_item(list rows, Py_ssize_t i)
    void _set_borrowed_item(list rows, Py_ssize_t i, void *p)


# A row's key and its slot, through a borrowed pointer to its Pair (no reference counted)
cdef inline unsigned long long _packets_key(void *pair) noexcept:
    cdef long long x = (<Pair>pair).a.packets
    cdef long long y = (<Pair>pair).b.packets
    return x if x >= y else y


cdef inline unsigned long long _bytes_key(void *pair) noexcept:
    cdef long long x = (<Pair>pair).a.bytes
    cdef long long y = (<Pair>pair).b.bytes
    return x if x >= y else y


cdef inline void _set_slot(void *pair, Py_ssize_t j) noexcept:
    (<Pair>pair).slot = j
