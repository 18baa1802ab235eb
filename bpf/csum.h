/* Internet checksums (RFC 1071, RFC 1624) over memory a BPF program can read: the packet, or the stack. Shared by
 * the XDP program (xdplb.c) and the check-path tc program (check_path.c, through encap.h). */
#ifndef XDPLB_CSUM_H
#define XDPLB_CSUM_H

/* The RFC 1071 sum of LEN (a constant, even) bytes at P, added to SUM, not folded. */
static __always_inline __u32 sum_words(void *p, const int len, __u32 sum)
{
    __u16 *word = p;
#pragma unroll
    for (int i = 0; i < len / 2; i++)
        sum += word[i];
    return sum;
}

static __always_inline __u16 fold(__u32 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

/* An IPv4 header without options, its check field zero. */
static __always_inline __u16 ipv4_checksum(struct iphdr *ip)
{
    return fold(sum_words(ip, sizeof(*ip), 0));
}

/* RFC 1624 (eqn. 3): the checksum at CHECK after one 16-bit word of what it covers changed from OLD to NEW. */
static __always_inline void csum_replace_word(__u16 *check, __u16 old, __u16 new)
{
    *check = fold((__u16)~*check + (__u16)~old + new);
}

#endif
