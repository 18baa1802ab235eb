/* xdplb decap: the backend's side of layer-3 DSR, for hosts with no tunnel modules (or none wanted).
 *
 * A frame whose outer IPv4 or IPv6 header is addressed to one of this host's tunnel addresses (decap_addrs_v4/v6,
 * filled by `xdplb decap attach`) and carries IP in IP (protocol 4 or 41) or GUE (UDP to DECAP_GUE_PORT, the
 * inner IP packet right after the UDP header) loses its outer headers: the inner packet goes on to the stack
 * (XDP_PASS) behind the same Ethernet header (and VLAN tag), and the stack sees the VIP, which must be on the
 * host (loopback), as its destination. Everything else passes untouched. Outer fragments, IPv4 options and IPv6
 * extension headers are left to the kernel.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_vlan.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#ifndef DECAP_ADDRS
#define DECAP_ADDRS 64             /* tunnel addresses per family */
#endif

struct decap_config {
    __be16 gue_port;               /* 0: no GUE */
    __u8 pad[2];
};

/* Per-CPU counters, summed by bpf/decap.py (the same names, in this order). */
struct decap_stats {
    __u64 rx_packets;              /* every frame seen */
    __u64 ipip;                    /* IP in IP taken off (4in4, 6in6, 4in6, 6in4) */
    __u64 gue;                     /* GUE taken off */
    __u64 malformed;               /* for a tunnel address, tunnel protocol, but inner packet not IP of its kind */
};

BPF_HASH(decap_addrs_v4, __be32, __u8, DECAP_ADDRS);
BPF_HASH(decap_addrs_v6, struct in6_addr, __u8, DECAP_ADDRS);
BPF_ARRAY(decap_config, struct decap_config, 1);
BPF_PERCPU_ARRAY(decap_stats, struct decap_stats, 1);

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Takes OUTER bytes off after the L2 header (TAGGED: with one VLAN tag), which moves forward with the
 * ethertype INNER. */
static __always_inline int strip(struct xdp_md *ctx, int tagged, __u32 outer, __be16 inner)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr eth;
    struct vlan_hdr vlan = {};
    if (data + sizeof(eth) + sizeof(vlan) > data_end)
        return XDP_PASS;
    __builtin_memcpy(&eth, data, sizeof(eth));
    if (tagged)
        __builtin_memcpy(&vlan, data + sizeof(eth), sizeof(vlan));
    if (bpf_xdp_adjust_head(ctx, (int)outer))
        return XDP_PASS;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (data + sizeof(eth) + sizeof(vlan) > data_end)
        return XDP_DROP;  /* cannot happen: an inner IP header follows */
    if (tagged) {
        vlan.h_vlan_encapsulated_proto = inner;
        __builtin_memcpy(data + sizeof(eth), &vlan, sizeof(vlan));
    } else {
        eth.h_proto = inner;
    }
    __builtin_memcpy(data, &eth, sizeof(eth));
    return XDP_PASS;
}

/* The inner packet at INNER (AVAIL bytes) must be IP of the version PROTO says (4, 41; 0 for GUE: either). */
static __always_inline __be16 inner_ethertype(__u8 *inner, void *data_end, __u8 proto)
{
    if ((void *)(inner + 1) > data_end)
        return 0;
    __u8 version = inner[0] >> 4;
    if (version == 4 && proto != IPPROTO_IPV6)
        return bpf_htons(ETH_P_IP);
    if (version == 6 && proto != IPPROTO_IPIP)
        return bpf_htons(ETH_P_IPV6);
    return 0;
}

static __always_inline int decap_l4(struct xdp_md *ctx, struct decap_stats *s, __u32 l2, __u32 ip_len, __u8 proto,
                                    void *l4, void *data_end)
{
    __u32 zero = 0;
    if (proto == IPPROTO_IPIP || proto == IPPROTO_IPV6) {
        __be16 inner = inner_ethertype(l4, data_end, proto);
        if (!inner) {
            if (s)
                s->malformed++;
            return XDP_DROP;
        }
        if (s)
            s->ipip++;
        return strip(ctx, l2 != sizeof(struct ethhdr), ip_len, inner);
    }
    if (proto != IPPROTO_UDP)
        return XDP_PASS;
    struct udphdr *udp = l4;
    struct decap_config *cfg = decap_config.lookup(&zero);
    if ((void *)(udp + 1) > data_end || !cfg || !cfg->gue_port || udp->dest != cfg->gue_port)
        return XDP_PASS;
    __be16 inner = inner_ethertype((void *)(udp + 1), data_end, 0);
    if (!inner) {
        if (s)
            s->malformed++;
        return XDP_DROP;
    }
    if (s)
        s->gue++;
    return strip(ctx, l2 != sizeof(struct ethhdr), ip_len + sizeof(*udp), inner);
}

int xdplb_decap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct decap_stats *s = decap_stats.lookup(&zero);
    if (s)
        s->rx_packets++;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    __be16 proto = eth->h_proto;
    __u32 l2 = sizeof(*eth);
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
        struct vlan_hdr *vh = (void *)(eth + 1);
        if ((void *)(vh + 1) > data_end)
            return XDP_PASS;
        proto = vh->h_vlan_encapsulated_proto;
        l2 += sizeof(*vh);
    }
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = data + l2;
        if ((void *)(ip + 1) > data_end || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
            return XDP_PASS;
        __be32 daddr = ip->daddr;
        if (!decap_addrs_v4.lookup(&daddr))
            return XDP_PASS;
        return decap_l4(ctx, s, l2, sizeof(*ip), ip->protocol, ip + 1, data_end);
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + l2;
        if ((void *)(ip6 + 1) > data_end)
            return XDP_PASS;
        struct in6_addr daddr = ip6->daddr;
        if (!decap_addrs_v6.lookup(&daddr))
            return XDP_PASS;
        return decap_l4(ctx, s, l2, sizeof(*ip6), ip6->nexthdr, ip6 + 1, data_end);
    }
    return XDP_PASS;
}
