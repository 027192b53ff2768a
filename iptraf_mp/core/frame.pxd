cpdef unsigned long long endpoint(unsigned long long addr, unsigned long long port)
cpdef unsigned long long fast_key(unsigned long long lo, unsigned long long hi, int iface_no)
cpdef unsigned int be16(unsigned char *p, Py_ssize_t off)
cpdef unsigned long long be32(unsigned char *p, Py_ssize_t off)
cpdef unsigned long long le32(unsigned char *p, Py_ssize_t off)
cpdef unsigned long long u32(unsigned char *p, Py_ssize_t off, bint big_endian)
cpdef int plain_tcp_len(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                        Py_ssize_t wirelen)
cpdef bint same_mac(unsigned char *p, Py_ssize_t off, object mac)
cpdef unsigned long long src_endpoint(unsigned char *p, Py_ssize_t off)
cpdef unsigned long long dst_endpoint(unsigned char *p, Py_ssize_t off)
cpdef int tcp_flags(unsigned char *p, Py_ssize_t off)
cpdef unsigned int tcp_window(unsigned char *p, Py_ssize_t off)
cpdef bint same_smac(unsigned char *p, Py_ssize_t off, object mac)
cpdef Py_ssize_t carried_len(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen,
                             Py_ssize_t wirelen)
cpdef int plain_shard(unsigned char *p, Py_ssize_t off, Py_ssize_t caplen, int ifindex,
                      int nshards)
