from iptraf_mp.core.batch_format cimport BatchBuilder
from iptraf_mp.core.frame cimport be32, carried_len, le32, plain_shard
