"""iptraf-mp app: the command line, the composition root (the only layer that wires the
shards and the store together)."""
