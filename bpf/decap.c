/* xdplb decap: the backend's side of layer-3 DSR, for hosts with no tunnel modules (or none wanted).
 *
 * A frame whose outer IPv4 or IPv6 header is addressed to one of this host's tunnel addresses (decap_config,
 * filled by `xdplb decap attach`) and carries IP in IP (protocol 4 or 41) or GUE (UDP to DECAP_GUE_PORT, the
 * inner IP packet right after the UDP header) loses its outer headers: the inner packet goes on to the stack
 * (XDP_PASS) behind the same Ethernet header (and VLAN tag), and the stack sees the VIP, which must be on the
 * host (loopback), as its destination. Everything else passes untouched. Outer fragments, IPv4 options and IPv6
 * extension headers are left to the kernel. With outer sources given (the balancers' tunnel sources), a tunnel
 * from any other source is dropped and counted: it could carry any inner source past the path's filters.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>

struct vlan_hdr {  /* 802.1Q, as the kernel's <linux/if_vlan.h> has it (not part of its uapi) */
    __be16 h_vlan_TCI;
    __be16 h_vlan_encapsulated_proto;
};

#define DECAP_ADDRS 8              /* tunnel addresses per family: scanned, cheaper than a hash lookup */

/* Everything the program reads for a frame, in one map entry. */
struct decap_config {
    __be16 gue_port;               /* 0: no GUE */
    __u8 count_v4;                 /* addresses in use at the front of addrs_v4 / addrs_v6 */
    __u8 count_v6;
    __be32 addrs_v4[DECAP_ADDRS];
    struct in6_addr addrs_v6[DECAP_ADDRS];
    __u8 sources_v4;               /* outer sources allowed, at the front of srcs_v4 / srcs_v6; 0: any */
    __u8 sources_v6;
    __u8 pad[2];
    __be32 srcs_v4[DECAP_ADDRS];
    struct in6_addr srcs_v6[DECAP_ADDRS];
};

/* Per-CPU counters, summed by bpf/decap.py (the same names, in this order). */
struct decap_stats {
    __u64 rx_packets;              /* every frame seen */
    __u64 ipip;                    /* IP in IP taken off (4in4, 6in6, 4in6, 6in4) */
    __u64 gue;                     /* GUE taken off */
    __u64 malformed;               /* for a tunnel address, tunnel protocol, but inner packet not IP of its kind */
    __u64 refused;                 /* a tunnel from an outer source not allowed (when sources are given): dropped */
};

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

/* Whether ADDR is among the first COUNT of LIST. */
static __always_inline int listed_v4(const __be32 *list, __u8 count, __be32 addr)
{
    int found = 0;
#pragma unroll
    for (int i = 0; i < DECAP_ADDRS; i++)
        found |= i < count && list[i] == addr;
    return found;
}

static __always_inline int listed_v6(const struct in6_addr *list, __u8 count, struct in6_addr *addr)
{
    const __u64 *a = (const __u64 *)addr;
    int found = 0;
#pragma unroll
    for (int i = 0; i < DECAP_ADDRS; i++) {
        const __u64 *b = (const __u64 *)&list[i];
        found |= i < count && !((a[0] ^ b[0]) | (a[1] ^ b[1]));
    }
    return found;
}

static __always_inline int decap_l4(struct xdp_md *ctx, struct decap_stats *s, struct decap_config *cfg, __u32 l2,
                                    __u32 ip_len, __u8 proto, void *l4, void *data_end, int allowed)
{
    if (proto == IPPROTO_IPIP || proto == IPPROTO_IPV6) {
        if (!allowed) {
            if (s)
                s->refused++;
            return XDP_DROP;
        }
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
    if ((void *)(udp + 1) > data_end || !cfg->gue_port || udp->dest != cfg->gue_port)
        return XDP_PASS;
    if (!allowed) {
        if (s)
            s->refused++;
        return XDP_DROP;
    }
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
    struct decap_config *cfg = decap_config.lookup(&zero);
    if (s)
        s->rx_packets++;
    if (!cfg)
        return XDP_PASS;
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
        if (!listed_v4(cfg->addrs_v4, cfg->count_v4, ip->daddr))
            return XDP_PASS;
        int allowed = !cfg->sources_v4 || listed_v4(cfg->srcs_v4, cfg->sources_v4, ip->saddr);
        return decap_l4(ctx, s, cfg, l2, sizeof(*ip), ip->protocol, ip + 1, data_end, allowed);
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + l2;
        if ((void *)(ip6 + 1) > data_end)
            return XDP_PASS;
        if (!listed_v6(cfg->addrs_v6, cfg->count_v6, &ip6->daddr))
            return XDP_PASS;
        int allowed = !cfg->sources_v6 || listed_v6(cfg->srcs_v6, cfg->sources_v6, &ip6->saddr);
        return decap_l4(ctx, s, cfg, l2, sizeof(*ip6), ip6->nexthdr, ip6 + 1, data_end, allowed);
    }
    return XDP_PASS;
}
