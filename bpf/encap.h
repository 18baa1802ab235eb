/* The outer headers of xdplb's tunnels, written alike by the XDP program (xdplb.c: forwarded packets) and by the
 * tc program of checks through the data path (check_path.c): a backend decapsulates both the same way. IP in IP
 * (4in4, 6in6, 4in6, 6in4) or GUE variant 1 (the inner packet right after UDP); DF on IPv4, TTL and hop limit
 * TUNNEL_TTL; the IPv6 flow label and the UDP source port from the flow's hash (entropy for ECMP and RSS on the
 * way); no UDP checksum (RFC 6935 allows a zero one for tunnels over IPv6 too; the decap side does not check). */
#ifndef XDPLB_ENCAP_H
#define XDPLB_ENCAP_H

#include "csum.h"

#define TUNNEL_TTL 64              /* TTL / hop limit of the outer header */
#define TUNNEL_IP_DF 0x4000        /* don't fragment: path MTU discovery, as the inner TCP does */

static __always_inline __u8 tunnel_protocol(int gue, int inner6)
{
    return gue ? IPPROTO_UDP : (inner6 ? IPPROTO_IPV6 : IPPROTO_IPIP);
}

/* An outer IPv4 header of TOTAL_LEN bytes in all (this header included), with its checksum. The sources are typed
 * (a word here, an in6_addr below) so that the compiler copies them in words: as `const void *` they went byte by
 * byte, 200 more instructions in xdplb.c. */
static __always_inline void outer_ipv4(struct iphdr *ip, __u8 tos, __u32 total_len, __u8 proto, __be32 saddr,
                                       const void *daddr)
{
    ip->version = 4;
    ip->ihl = 5;
    ip->tos = tos;
    ip->tot_len = bpf_htons(total_len);
    ip->id = 0;
    ip->frag_off = bpf_htons(TUNNEL_IP_DF);
    ip->ttl = TUNNEL_TTL;
    ip->protocol = proto;
    ip->check = 0;
    ip->saddr = saddr;
    __builtin_memcpy(&ip->daddr, daddr, 4);
    ip->check = ipv4_checksum(ip);
}

/* An outer IPv6 header carrying PAYLOAD_LEN bytes, traffic class TCLASS, the flow label from HASH. */
static __always_inline void outer_ipv6(struct ipv6hdr *ip6, __u8 tclass, __u32 hash, __u32 payload_len, __u8 proto,
                                       const struct in6_addr *saddr, const void *daddr)
{
    __u32 label = hash & 0xfffff;
    ip6->version = 6;
    ip6->priority = tclass >> 4;
    ip6->flow_lbl[0] = (__u8)(tclass << 4) | (__u8)(label >> 16);
    ip6->flow_lbl[1] = label >> 8;
    ip6->flow_lbl[2] = label;
    ip6->payload_len = bpf_htons(payload_len);
    ip6->nexthdr = proto;
    ip6->hop_limit = TUNNEL_TTL;
    __builtin_memcpy(&ip6->saddr, saddr, 16);
    __builtin_memcpy(&ip6->daddr, daddr, 16);
}

/* The GUE UDP header of UDP_LEN bytes in all (this header included), to PORT, the source port from HASH. */
static __always_inline void outer_gue(struct udphdr *udp, __u32 hash, __be16 port, __u32 udp_len)
{
    udp->source = bpf_htons(0xc000 | (hash & 0x3fff));
    udp->dest = port;
    udp->len = bpf_htons(udp_len);
    udp->check = 0;
}

#endif
