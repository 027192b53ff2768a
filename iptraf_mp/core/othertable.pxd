# The compiled layout of the lower window's table (Cython reads this beside othertable.py):
# its counters and clock as C fields, its packet paths as C-level calls, its lines C records.
# Its flows stay Python records: the merger, the store and the exporter share their layout.

from iptraf_mp.core.fastindex cimport FastIndex
from iptraf_mp.core.frame cimport (dst_addr, dst_endpoint, dst_mac, dst_port, fast_key, ip_id,
                                   src_addr, src_endpoint, src_mac, src_port, udp_frame_len,
                                   udp_head)


cdef class OtherLine:
    cdef public double ts
    cdef public str iface
    cdef object _d
    cdef public long long frame_no
    cdef bytes head
    cdef int tlen


cdef OtherLine _frame_line(double ts, str iface, bytes head, int tlen, long long frame_no)


cdef class _UdpSlot:
    cdef unsigned long long src_ep
    cdef unsigned long long dst_ep
    cdef str iface
    cdef object flow


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
    cdef public FastIndex fast

    cpdef int frame_packet(self, unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                           Py_ssize_t wirelen, double ts, str iface, int iface_no,
                           long long frame_no) except -2
    cdef double _count(self, double ts, object flow, int iplen) except? -1.0
    cdef void _line(self, OtherLine line)
