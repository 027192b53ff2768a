# The JSON record's C-level calls (Cython reads this beside jsonline.py).
from iptraf_mp.core.frame cimport copy_bytes
from iptraf_mp.core.tcptable cimport Entry, Pair, entry_state
cpdef str fmt_time(double x)
