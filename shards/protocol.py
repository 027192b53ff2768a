"""Into a shard: batches (shards/batch.py) whose records are packets, or control records
told apart by their interface index, declared here. (Out of a shard go Publications, which
the main process merges: iptraf_mp/core/publication.py.)"""

from __future__ import annotations

# Control records in a batch: the interface index field says what the record is. It is 32
# bits wide and interfaces stop at MAX_IFACES (capture files with more are refused), so a
# control record can never be taken for a packet nor a packet for a control record.
MAX_IFACES = 1 << 16
CTL_TICK = 0xFFFF_FFFF  # the packet clock starts a new second at `ts` (broadcast to every shard)
CTL_IFACE = 0xFFFF_FFFE  # data = b"<ifindex>\0<linktype>\0<name>": a new interface (broadcast)
CTL_END = 0xFFFF_FFFD  # this producer has finished (broadcast)
CTL_FLUSH = 0xFFFF_FFFC  # the F key: retire closed pairs (broadcast)
# A TCP fragment that came before its first fragment went to one shard (by its addresses);
# every other shard keeps the same note of it (data = fragment key, wirelen = its IP length),
# since its first fragment, which names the connection, may go to any of them. And when that
# first fragment comes, the shards it does not go to drop the note, as one engine would.
CTL_FRAG_PENDING = 0xFFFF_FFFB
CTL_FRAG_FIRST = 0xFFFF_FFFA
# Replays: publish now (wirelen = the epoch's number). Every shard publishes at the same
# position of the stream, so the merger can show a state one engine had (see Merger).
CTL_PUBLISH = 0xFFFF_FFF9


def frag_key_record(src: bytes, dst: bytes, proto: int, ipid: int) -> bytes:
    return bytes((len(src), proto)) + ipid.to_bytes(4, "big") + src + dst


def parse_frag_key(data: bytes) -> tuple[bytes, bytes, int, int]:
    n, proto = data[0], data[1]
    return data[6:6 + n], data[6 + n:6 + 2 * n], proto, int.from_bytes(data[2:6], "big")


def iface_record(ifindex: int, linktype: int, name: str) -> bytes:
    return f"{ifindex}\0{linktype}\0{name}".encode()


def parse_iface_record(data: bytes) -> tuple[int, int, str]:
    idx, lt, name = data.decode("utf-8", "replace").split("\0", 2)
    return int(idx), int(lt), name
