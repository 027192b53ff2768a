# snapshot.py's C-level imports (Cython reads this beside it).
from iptraf_mp.core.tcptable cimport Entry, Pair
