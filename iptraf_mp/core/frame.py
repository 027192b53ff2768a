"""The plain frame: Ethernet + IPv4 without options + TCP or UDP, as almost every frame of a
busy link is, and the connection key the fast path finds its pair by.

One declaration of the layout for the in-place paths (fastpath.py), with the predicates that
say a frame is plain (`tcp_frame_len`, `udp_frame_len`: the decoder's own
checks for this case, so a frame they pass decodes with the fields read here); the general
decoder (decode.py) reads every other frame. Functions here take the
frame's bytes and an offset, so they read a frame inside a larger buffer (a capture file's,
a batch's) without slicing it out: compiled, `p` is a pointer and no Python object is made.
"""

from __future__ import annotations

import cython

ETH_HDR = cython.declare(cython.Py_ssize_t, 14)
PLAIN_MIN = cython.declare(cython.Py_ssize_t, 54)  # Ethernet + 20 bytes of IPv4 + 20 of TCP
UDP_MIN = cython.declare(cython.Py_ssize_t, 38)  # Ethernet + 20 bytes of IPv4 + the ports
# Offsets in the frame
OFF_SMAC = cython.declare(cython.Py_ssize_t, 6)
OFF_ETYPE = cython.declare(cython.Py_ssize_t, 12)
OFF_VIHL = cython.declare(cython.Py_ssize_t, 14)  # 0x45: IPv4, no options
OFF_TLEN = cython.declare(cython.Py_ssize_t, 16)
OFF_IPID = cython.declare(cython.Py_ssize_t, 18)
OFF_FRAG = cython.declare(cython.Py_ssize_t, 20)
OFF_PROTO = cython.declare(cython.Py_ssize_t, 23)
OFF_SRC = cython.declare(cython.Py_ssize_t, 26)
OFF_DST = cython.declare(cython.Py_ssize_t, 30)
OFF_SPORT = cython.declare(cython.Py_ssize_t, 34)
OFF_DPORT = cython.declare(cython.Py_ssize_t, 36)
OFF_SEQ = cython.declare(cython.Py_ssize_t, 38)
OFF_ACK = cython.declare(cython.Py_ssize_t, 42)
OFF_DOFF = cython.declare(cython.Py_ssize_t, 46)
OFF_FLAGS = cython.declare(cython.Py_ssize_t, 47)
OFF_WIN = cython.declare(cython.Py_ssize_t, 48)



# odd 64-bit multipliers (typed: as bare literals Cython would multiply Python ints)
_K_LO = cython.declare(cython.ulonglong, 0x5851F42D4C957F2D)
_K_HI = cython.declare(cython.ulonglong, 0x14057B7EF767814F)
_K_IF = cython.declare(cython.ulonglong, 0x27BB2EE687B0B0FD)


@cython.ccall
@cython.exceptval(check=False)
def endpoint(addr: cython.ulonglong, port: cython.ulonglong) -> cython.ulonglong:
    """An IPv4 address and port as one 48-bit number. Numbers compare as conn_key compares
    (address bytes, then port), so the lower endpoint is the same one."""
    return (addr << 16) | port


@cython.ccall
@cython.exceptval(check=False)
def fast_key(lo: cython.ulonglong, hi: cython.ulonglong, iface_no: cython.int) \
        -> cython.ulonglong:
    """A 64-bit hash of a connection (its lower and higher endpoint, its interface's
    number). Not unique: the table checks the pair it finds (lo, hi, interface) and keeps
    a colliding pair out of the index, where the general path still finds it."""
    h: cython.ulonglong = (lo * _K_LO) ^ (hi * _K_HI) ^ (iface_no * _K_IF)
    if cython.compiled:
        return h  # C arithmetic wraps at 64 bits
    return h & 0xFFFFFFFFFFFFFFFF


@cython.ccall
@cython.exceptval(check=False)
def copy_bytes(dst: cython.p_uchar, at: cython.Py_ssize_t, src: cython.p_uchar,
               off: cython.Py_ssize_t, n: cython.Py_ssize_t) -> cython.void:
    """`n` bytes from `src[off]` to `dst[at]` (buffers that do not overlap)."""
    if cython.compiled:
        # libc's (frame.pxd cimports it): a loop of byte or word stores costs two to three
        # times as much on a frame's 54 bytes of headers
        memcpy(cython.address(dst[at]), cython.address(src[off]), n)  # type: ignore[name-defined]  # noqa: F821
    else:
        dst[at:at + n] = src[off:off + n]


@cython.ccall
@cython.exceptval(check=False)
def be16(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.uint:
    return (p[off] << 8) | p[off + 1]


@cython.ccall
@cython.exceptval(check=False)
def be32(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    top: cython.ulonglong = p[off]  # typed: p[i] << 24 overflows a C int
    return (top << 24) | (p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3]


@cython.ccall
@cython.exceptval(check=False)
def le32(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    """A little-endian u32 (pcap records of a little-endian file, batch records)."""
    top: cython.ulonglong = p[off + 3]  # typed: p[i] << 24 overflows a C int
    return (top << 24) | (p[off + 2] << 16) | (p[off + 1] << 8) | p[off]


@cython.ccall
@cython.exceptval(check=False)
def u32(p: cython.p_uchar, off: cython.Py_ssize_t, big_endian: cython.bint) -> cython.ulonglong:
    """A u32 in its file's byte order (the fields of a pcap record header)."""
    return be32(p, off) if big_endian else le32(p, off)


@cython.ccall
@cython.exceptval(check=False)
def tcp_frame_len(p: cython.p_uchar, off: cython.Py_ssize_t, caplen: cython.Py_ssize_t,
                  wirelen: cython.Py_ssize_t) -> cython.int:
    """The IPv4 total length of a plain frame (at `off` in `p`, of `caplen` captured bytes)
    that is not a fragment, whatever its flags; -1 for any other frame. The checks are the
    decoder's for this case (decode.py), so a frame that passes decodes as a well-formed
    TCP packet with these fields."""
    if caplen < PLAIN_MIN or p[off + OFF_VIHL] != 0x45 or p[off + OFF_ETYPE] != 8 \
            or p[off + OFF_ETYPE + 1] != 0 or p[off + OFF_PROTO] != 6:
        return -1
    if be16(p, off + OFF_FRAG) & 0x3FFF:
        return -1
    doff: cython.int = p[off + OFF_DOFF]
    tlen: cython.int = be16(p, off + OFF_TLEN)
    if doff < 0x50 or not 20 + ((doff >> 4) << 2) <= tlen <= wirelen - ETH_HDR:
        return -1
    return tlen


@cython.ccall
@cython.exceptval(check=False)
def udp_frame_len(p: cython.p_uchar, off: cython.Py_ssize_t, caplen: cython.Py_ssize_t,
                  wirelen: cython.Py_ssize_t) -> cython.int:
    """The IPv4 total length of a plain UDP frame (Ethernet + IPv4 without options + the
    UDP ports) that is not a fragment; -1 for any other frame. As `tcp_frame_len`, the
    decoder's checks for this case: a frame that passes decodes as a well-formed UDP
    datagram (its ports inside both the capture and the IP length)."""
    if caplen < UDP_MIN or p[off + OFF_VIHL] != 0x45 or p[off + OFF_ETYPE] != 8 \
            or p[off + OFF_ETYPE + 1] != 0 or p[off + OFF_PROTO] != 17:
        return -1
    if be16(p, off + OFF_FRAG) & 0x3FFF:
        return -1
    tlen: cython.int = be16(p, off + OFF_TLEN)
    if not 24 <= tlen <= wirelen - ETH_HDR:
        return -1
    return tlen


@cython.ccall
@cython.exceptval(check=False)
def tcp_payload_len(p: cython.p_uchar, off: cython.Py_ssize_t, tlen: cython.int) -> cython.int:
    """The TCP payload length of a plain frame whose IPv4 total length is `tlen`."""
    return tlen - 20 - ((p[off + OFF_DOFF] >> 4) << 2)


@cython.ccall
@cython.exceptval(check=False)
def carried_len(p: cython.p_uchar, off: cython.Py_ssize_t, caplen: cython.Py_ssize_t,
                wirelen: cython.Py_ssize_t) -> cython.Py_ssize_t:
    """How much of an Ethernet frame a capture process hands a shard: all of it, but for
    the plain IPv4 TCP frame with sane lengths, whose first 54 bytes are all the decoder
    reads (its lengths come from the headers and the wire length, never from what was
    captured). The payload need not cross the ring: batches of bulk traffic shrink about
    tenfold, so the rings hold ten times the packets before a burst overflows them."""
    if caplen <= PLAIN_MIN or p[off + OFF_VIHL] != 0x45 or p[off + OFF_PROTO] != 6 \
            or p[off + OFF_ETYPE] != 8 or p[off + OFF_ETYPE + 1] != 0 \
            or p[off + OFF_FRAG] & 0x3F or p[off + OFF_FRAG + 1]:
        return caplen
    thl: cython.Py_ssize_t = (p[off + OFF_DOFF] >> 4) << 2
    tlen: cython.Py_ssize_t = be16(p, off + OFF_TLEN)
    if thl >= 20 and 20 + thl <= tlen <= wirelen - ETH_HDR:
        return PLAIN_MIN
    return caplen


@cython.ccall
@cython.exceptval(check=False)
def plain_shard(p: cython.p_uchar, off: cython.Py_ssize_t, caplen: cython.Py_ssize_t,
                ifindex: cython.int, nshards: cython.int) -> cython.int:
    """The shard of an untagged Ethernet IPv4 TCP or UDP frame without options that is not
    a fragment (shards/hashing.py's rule, for the frames that make most of a link); -1 for
    any other frame."""
    if caplen < OFF_DPORT + 2 or p[off + OFF_ETYPE] != 8 or p[off + OFF_ETYPE + 1] != 0 \
            or p[off + OFF_VIHL] != 0x45:
        return -1
    proto: cython.int = p[off + OFF_PROTO]
    if (proto != 6 and proto != 17) or be16(p, off + OFF_FRAG) & 0x3FFF:
        return -1
    es: cython.ulonglong = src_endpoint(p, off)
    ed: cython.ulonglong = dst_endpoint(p, off)
    if es <= ed:
        return fast_key(es, ed, ifindex) % nshards
    return fast_key(ed, es, ifindex) % nshards


@cython.ccall
@cython.exceptval(check=False)
def src_endpoint(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    """The plain frame's source address and port (frame at `off`) as `endpoint` makes it."""
    return endpoint(be32(p, off + OFF_SRC), be16(p, off + OFF_SPORT))


@cython.ccall
@cython.exceptval(check=False)
def dst_endpoint(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    return endpoint(be32(p, off + OFF_DST), be16(p, off + OFF_DPORT))


@cython.ccall
@cython.exceptval(check=False)
def tcp_flags(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.int:
    return p[off + OFF_FLAGS]


@cython.ccall
@cython.exceptval(check=False)
def src_port(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.uint:
    return be16(p, off + OFF_SPORT)


@cython.ccall
@cython.exceptval(check=False)
def dst_port(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.uint:
    return be16(p, off + OFF_DPORT)


@cython.ccall
@cython.exceptval(check=False)
def ip_id(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.uint:
    return be16(p, off + OFF_IPID)


@cython.ccall
@cython.exceptval(check=False)
def tcp_seq(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    return be32(p, off + OFF_SEQ)


@cython.ccall
@cython.exceptval(check=False)
def tcp_ack(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    return be32(p, off + OFF_ACK)


@cython.ccall
@cython.exceptval(check=False)
def tcp_window(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.uint:
    return be16(p, off + OFF_WIN)


@cython.ccall
@cython.exceptval(check=False)
def same_smac(p: cython.p_uchar, off: cython.Py_ssize_t, mac: object) -> cython.bint:
    """The source MAC of the frame at `off` is `mac`."""
    return same_mac(p, off + OFF_SMAC, mac)


@cython.ccall
def src_addr(p: cython.p_uchar, off: cython.Py_ssize_t) -> bytes:
    """The plain frame's packed source address, as the decoder gives it."""
    return p[off + OFF_SRC:off + OFF_SRC + 4]


@cython.ccall
def dst_addr(p: cython.p_uchar, off: cython.Py_ssize_t) -> bytes:
    return p[off + OFF_DST:off + OFF_DST + 4]


@cython.ccall
def src_mac(p: cython.p_uchar, off: cython.Py_ssize_t) -> bytes:
    return p[off + OFF_SMAC:off + OFF_SMAC + 6]


@cython.ccall
def dst_mac(p: cython.p_uchar, off: cython.Py_ssize_t) -> bytes:
    return p[off:off + 6]


@cython.ccall
def udp_head(p: cython.p_uchar, off: cython.Py_ssize_t) -> bytes:
    """The plain UDP frame's first bytes: every field its decoded record has (its lines
    keep them, decoded when shown)."""
    return p[off:off + UDP_MIN]


@cython.ccall
@cython.exceptval(check=False)
def same_mac(p: cython.p_uchar, off: cython.Py_ssize_t, mac: object) -> cython.bint:
    """The 6 bytes at `off` are `mac` (a bytes object, or None: never the same)."""
    if mac is None:
        return False
    m = cython.cast(bytes, mac)
    if len(m) != 6:
        return False
    i: cython.Py_ssize_t
    for i in range(6):
        if m[i] != p[off + i]:
            return False
    return True
