# The merger's C-level view of the records it mirrors (Cython reads this beside merge.py):
# a connection's fields read as C fields, its screen rows as C calls.
from iptraf_mp.core.tcptable cimport Pair, SlotList
