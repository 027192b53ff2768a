# The compiled layout of the TCP table's records (Cython reads this beside tcptable.py):
# counters and times as C fields, so the fast path updates a connection without making a
# Python object. The packet paths return -1 for a frame they leave to the general path: their
# error value is -2, so that answer costs no check for a pending exception. Interpreted, tcptable.py's dataclasses are the same records.

cimport cython

from iptraf_mp.core.fastindex cimport FastIndex
from iptraf_mp.core.frame cimport (be32, dst_addr, dst_endpoint, endpoint, fast_key,
                                   same_smac, src_addr, src_endpoint, src_mac,
                                   tcp_ack, tcp_flags, tcp_frame_len, tcp_payload_len, tcp_seq,
                                   tcp_window)


cdef class Entry:
    cdef public bytes src
    cdef public int sport
    cdef public bytes dst
    cdef public int dport
    cdef public long long packets
    cdef public long long bytes
    cdef public int last_size
    cdef public int window
    cdef public int flags
    cdef public object smac
    cdef public int finsent
    cdef public long long finack
    cdef public bint reset
    cdef public double first_seen
    cdef public double last_seen
    cdef public int flags_seen


cdef class Pair:
    cdef public object id
    cdef public str iface
    cdef public Entry a
    cdef public Entry b
    cdef public bint partial
    cdef public double first_seen
    cdef public double last_seen
    cdef public Py_ssize_t slot
    cdef public bint closed
    cdef public bint timed_out
    cdef public str end
    cdef public long long lru_sec
    cdef public bint retired
    cdef public bint ended
    cdef public bint halfopen
    cdef public unsigned long long lo_ep
    cdef public unsigned long long hi_ep
    cdef public unsigned long long a_ep
    cdef public int iface_no
    cdef public object fkey
    cdef public bint marked


cdef class SlotList:
    cdef public list slots
    cdef public dict closed
    cpdef Pair add(self, Pair pair)
    cpdef void mark_closed(self, Pair pair)


@cython.final
cdef class TcpTable:
    cdef public double timeout
    cdef public bint log_events
    cdef public SlotList display
    cdef public dict pairs
    cdef public dict live
    cdef public dict open_lru
    cdef public dict ended_lru
    cdef public dict stale_lru
    cdef public dict stale_seen_lru
    cdef public list retired
    cdef public list events
    cdef public dict frags
    cdef public dict frag_pending
    cdef public dict frag_seen
    cdef public long long created
    cdef public dict macs
    cdef public long long max_pairs
    cdef public long long untracked
    cdef public long long evicted
    cdef public dict halfopen
    cdef public list dirty
    cdef public double clock
    cdef public FastIndex fast
    cdef public dict iface_nos

    cpdef int frame_packet(self, unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                           Py_ssize_t wirelen, double ts, str iface, int iface_no,
                           long long pair_id) except -2
    cdef Pair _open(self, double ts, double act, str iface, bytes src, int sport, bytes dst,
                    int dport, int flags, int paylen, object pair_id, object key, Pair old)
    cdef void _new_mac(self, double ts, Pair pair, Entry e, Entry o, object smac, int size)
    cdef void _update(self, double ts, double act, Pair pair, Entry e, Entry o, int size,
                      int flags, unsigned long long seq, unsigned long long ack, int win,
                      object first_frag)
    cdef void _state(self, double ts, Pair pair, Entry e, Entry o, int flags,
                     unsigned long long seq, unsigned long long ack, int size)
    cdef Pair _create(self, double ts, double act, str iface, bytes src, int sport, bytes dst,
                      int dport, int flags, object pair_id, object key)
    cdef void _end(self, Pair pair, str end, long long sec)
    cdef void _retire(self, Pair pair)
    cdef void _index(self, Pair pair)
    cpdef int iface_no(self, str iface) except -1
    cdef void _answered(self, Pair pair)
    cdef inline Pair _indexed(self, unsigned long long es, unsigned long long ed, int iface_no)
    cdef void _mark(self, Pair pair)
    cdef void _account(self, Pair pair, Entry e, int size, int win, int flags, double ts,
                       double act)


cpdef str entry_state(Pair pair, Entry e)
cpdef Entry new_entry(bytes src, int sport, bytes dst, int dport)
cpdef Pair new_pair(object pair_id, str iface, Entry a, Entry b, bint partial,
                    double first_seen, double last_seen)
