# The publication's C-level record conversions (Cython reads this beside publication.py): a
# pair's and an entry's fields read and written as C fields, not by attribute lookup, for
# every changed pair of every publication (a shard's) and its mirror (the merger's).
from iptraf_mp.core.tcptable cimport Entry, Pair

cpdef object entry_tuple(Entry e)
cpdef object pair_tuple(Pair p)
cpdef Pair pair_from_tuple(object t)
cpdef void update_pair(Pair p, object t) except *
cdef void _update_entry(Entry e, object v) except *
