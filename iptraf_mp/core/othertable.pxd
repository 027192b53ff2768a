# The compiled layout of the lower window's table (Cython reads this beside othertable.py):
# its counters and clock as C fields, its packet paths as C-level calls, its flows and lines
# C records.

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


cdef class OtherFlow:
    cdef public str iface
    cdef public int kind
    cdef public int proto
    cdef public bytes src
    cdef public bytes dst
    cdef public int sport
    cdef public int dport
    cdef public long long packets
    cdef public long long bytes
    cdef public double first_seen
    cdef public double last_seen
    cdef public object id
    cdef public bint ended
    cdef public double start_tick
    cdef public double end_tick
    cdef public double lru_next
    cdef public tuple key
    cdef public unsigned long long src_ep
    cdef public unsigned long long dst_ep
    cdef public object fkey


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
    cdef double _count(self, double ts, OtherFlow flow, int iplen) except? -1.0
    cdef void _line(self, OtherLine line)
