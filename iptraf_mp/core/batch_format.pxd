from iptraf_mp.core.frame cimport copy_bytes
cdef class BatchBuilder:
    cdef bytearray buf
    cdef Py_ssize_t size
    cdef Py_ssize_t count
    cpdef Py_ssize_t put(self, unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                         unsigned long long frame_no, double ts, Py_ssize_t wirelen,
                         Py_ssize_t ifindex)
