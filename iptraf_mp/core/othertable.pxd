# The compiled layout of the lower window's table (Cython reads this beside othertable.py):
# its counters and clock as C fields, its packet paths as C-level calls. Its flows and lines
# stay Python records: the merger, the store and the exporter share them.

from iptraf_mp.core.frame cimport (dst_addr, dst_mac, dst_port, ip_id, src_addr, src_mac,
                                   src_port, udp_frame_len)


cdef class OtherLine:
    cdef public double ts
    cdef public str iface
    cdef public object d
    cdef public long long frame_no


cdef class OtherTable:
    cdef public Py_ssize_t max_lines
    cdef public bint keep_new
    cdef public double idle
    cdef public object lines
    cdef public list new_lines
    cdef public long long line_count
    cdef public dict flows
    cdef public dict frag_firsts
    cdef public set dirty
    cdef public list ended
    cdef public double tick_time
    cdef public long long expired
    cdef public long long max_flows
    cdef public long long evicted

    cpdef int frame_packet(self, unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                           Py_ssize_t wirelen, double ts, str iface, long long frame_no) except -2
    cdef void _count(self, double ts, str iface, object d, int iplen, object flow,
                     long long frame_no, bint show, bint first_frag)
