"""iptraf-mp outputs: the sinks: JSON lines, the iptraf log, IPFIX export."""
