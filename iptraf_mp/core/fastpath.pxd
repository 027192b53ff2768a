# The compiled fast path's C-level calls (Cython reads this beside fastpath.py).
from iptraf_mp.core.frame cimport le32, u32
from iptraf_mp.core.tcptable cimport TcpTable
