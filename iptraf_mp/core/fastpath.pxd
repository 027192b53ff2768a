# The compiled fast path's C-level calls (Cython reads this beside fastpath.py).
from iptraf_mp.core.frame cimport le32, u32
from iptraf_mp.core.othertable cimport OtherTable
from iptraf_mp.core.tcptable cimport TcpTable


cdef class _Tally:
    cdef object engine
    cdef str name
    cdef long long tcp, tcp_bytes, udp, udp_bytes
    cdef int add(self, str name, int iplen, bint udp) except -1
    cpdef void flush(self)

