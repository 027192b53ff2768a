"""IPFIX export (RFC 7011): `encoder` makes the messages, `target` reads a collector's
address, `transport` sends to one collector, `pacer` bounds the rate, and `sink` is the
monitor's output that turns pairs and flows into records (docs/ipfix.md)."""
