from libc.string cimport memcpy
cpdef unsigned long long endpoint(unsigned long long addr, unsigned long long port) noexcept
cpdef unsigned long long fast_key(unsigned long long lo, unsigned long long hi, int iface_no) noexcept
cpdef void copy_bytes(unsigned char *dst, Py_ssize_t at, unsigned char *src, Py_ssize_t off,
                      Py_ssize_t n) noexcept
cpdef unsigned int be16(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned long long be32(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned long long le32(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned long long u32(unsigned char *p, Py_ssize_t off, bint big_endian) noexcept
cpdef int tcp_frame_len(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                        Py_ssize_t wirelen) noexcept
cpdef int udp_frame_len(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                        Py_ssize_t wirelen) noexcept
cpdef unsigned int src_port(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned int dst_port(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned int ip_id(unsigned char *p, Py_ssize_t off) noexcept
cpdef bytes dst_mac(unsigned char *p, Py_ssize_t off)
cpdef bytes udp_head(unsigned char *p, Py_ssize_t off)
cpdef int tcp_payload_len(unsigned char *p, Py_ssize_t off, int tlen) noexcept
cpdef unsigned long long tcp_seq(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned long long tcp_ack(unsigned char *p, Py_ssize_t off) noexcept
cpdef bytes src_addr(unsigned char *p, Py_ssize_t off)
cpdef bytes dst_addr(unsigned char *p, Py_ssize_t off)
cpdef bytes src_mac(unsigned char *p, Py_ssize_t off)
cpdef bint same_mac(unsigned char *p, Py_ssize_t off, object mac) noexcept
cpdef unsigned long long src_endpoint(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned long long dst_endpoint(unsigned char *p, Py_ssize_t off) noexcept
cpdef int tcp_flags(unsigned char *p, Py_ssize_t off) noexcept
cpdef unsigned int tcp_window(unsigned char *p, Py_ssize_t off) noexcept
cpdef bint same_smac(unsigned char *p, Py_ssize_t off, object mac) noexcept
cpdef Py_ssize_t carried_len(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                             Py_ssize_t wirelen) noexcept
cpdef int plain_shard(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen, int ifindex,
                      int nshards) noexcept
