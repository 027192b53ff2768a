from iptraf_mp.core.batch_format cimport BatchBuilder
from iptraf_mp.core.frame cimport carried_len, plain_shard, u32
