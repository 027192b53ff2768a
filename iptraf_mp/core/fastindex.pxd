# The compiled layout of the fast path's index (Cython reads this beside fastindex.py).
cdef class FastIndex:
    cdef unsigned long long[::1] keys
    cdef unsigned char[::1] state
    cdef list objs
    cdef Py_ssize_t mask
    cdef public Py_ssize_t count
    cdef Py_ssize_t gone
    cdef inline Py_ssize_t _find(self, unsigned long long key)
    cpdef object get(self, unsigned long long key)
    cpdef bint put(self, unsigned long long key, object obj)
    cpdef bint remove(self, unsigned long long key)
