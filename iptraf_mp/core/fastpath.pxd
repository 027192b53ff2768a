# The compiled fast path's C-level calls (Cython reads this beside fastpath.py).
from iptraf_mp.core.frame cimport (dst_endpoint, fast_key, le32, plain_tcp_len, same_smac,
                                   src_endpoint, tcp_flags, tcp_window, u32)
from iptraf_mp.core.fastindex cimport FastIndex
from iptraf_mp.core.tcptable cimport Entry, Pair

cpdef int fast_tcp(FastIndex index, unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                   Py_ssize_t wirelen, double ts, int iface_no, double tick_time,
                   list dirty)

