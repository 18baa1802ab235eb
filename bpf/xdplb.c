/* xdplb XDP program: layer-2 Direct Server Return with weighted Maglev and a flow table.
 *
 * A frame for a configured VIP:port:proto is sent to the chosen backend with its destination MAC, the egress
 * interface's own source MAC and, where the backend has one, its VLAN tag: back out of the interface it came in
 * on (XDP_TX) when the backend is there, else out of the backend's interface (XDP_REDIRECT through tx_ports).
 * Everything else goes to the kernel untouched (XDP_PASS). bpf/README.md describes the maps and the choices made
 * for fragments, IP options and floods.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

struct vlan_hdr {  /* 802.1Q, as the kernel's <linux/if_vlan.h> has it (not part of its uapi) */
    __be16 h_vlan_TCI;
    __be16 h_vlan_encapsulated_proto;
};

#include "xdplb.h"
#include "csum.h"
#include "encap.h"

/* (VIP, port, proto) -> service. */
BPF_HASH(services_v4, struct service_key_v4, struct service, MAX_SERVICES);
BPF_HASH(services_v6, struct service_key_v6, struct service, MAX_SERVICES);
/* VIP address -> number of services on it; consulted only for fragments and malformed packets. */
BPF_HASH(vip_addrs_v4, __be32, __u32, MAX_SERVICES);
BPF_HASH(vip_addrs_v6, struct in6_addr, __u32, MAX_SERVICES);
/* Maglev tables: table id -> an array of backend slots, one per table entry. Each table is its own map, made by
 * the loader at the service's table size (BPF_F_INNER_MAP lets sizes differ from the 1-entry template) and
 * written through mmap (BPF_F_MMAPABLE: one copy instead of a syscall's per-entry work, 0.04 ms against 5.6 ms
 * for 16381 entries). */
BPF_F_TABLE("array", __u32, __u32, maglev_template, 1, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
BPF_ARRAY_OF_MAPS(maglev_tables, "maglev_template", MAX_TABLES);
/* Backend slot -> L2 next hop. */
BPF_ARRAY(backends, struct backend, MAX_BACKENDS);
/* Established flows: a set-associative cache shared by all CPUs (see flow_set_v4 in xdplb.h). Mapped into
 * the loader (BPF_F_MMAPABLE), which counts active flows by reading the entries' last-seen times in place. */
BPF_F_TABLE("array", int, struct flow_set_v4, flows_v4, FLOW_SETS, BPF_F_MMAPABLE);
BPF_F_TABLE("array", int, struct flow_set_v6, flows_v6, FLOW_SETS, BPF_F_MMAPABLE);
/* Ifindex -> interface MAC (an array: ifindexes are small; beyond it the frame's own dst MAC is used). */
BPF_ARRAY(interfaces, struct interface, MAX_IFINDEX);
/* Egress ifindex -> the same ifindex: the interfaces a frame may be redirected out of (every attached one). */
BPF_DEVMAP(tx_ports, MAX_IFINDEX);
/* Counters. */
BPF_PERCPU_ARRAY(global_stats, struct global_stats, 1);
BPF_PERCPU_ARRAY(service_stats, struct service_stats, MAX_SERVICES);
BPF_PERCPU_ARRAY(backend_stats, struct backend_stats, MAX_BACKENDS);
BPF_PERCPU_ARRAY(flood_guards, struct flood_guard, 1);
BPF_PERCPU_ARRAY(clocks, struct clock_cache, 1);
/* Tunnels: a tunnelled backend slot -> its address; the node's tunnel sources and GUE port. */
BPF_ARRAY(tunnel_dests, struct tunnel_dest, MAX_BACKENDS);
BPF_ARRAY(tunnel_configs, struct tunnel_config, 1);
BPF_PERCPU_ARRAY(next_hops, struct next_hop, MAX_BACKENDS);
/* XDPLB_ABI, written by the loader: a later run reads it through this program's maps before taking its state. */
BPF_ARRAY(abi, __u32, 1);

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TCP_FLAG_SYN_ONLY(th) ((th)->syn && !(th)->ack)

/* The parts of a packet the balancer decision needs. */
struct packet {
    void *eth;
    struct vlan_hdr *vlan;         /* NULL when untagged */
    __u32 len;
    __u8 syn;                      /* TCP SYN without ACK: a connection attempt */
    __u8 icmp;                     /* an ICMP error about the flow: forwarded, never a new flow or an entry */
    __u32 hash;                    /* the flow key's flow-table hash: a tunnel's entropy (GUE port, flow label) */
    __u32 ip_len;                  /* the IP packet's own length (the frame may carry Ethernet padding after it) */
};

static __always_inline __u32 rotl32(__u32 x, __u32 r) { return (x << r) | (x >> (32 - r)); }

/* MurmurHash3 (x86, 32-bit) over whole words; tests/reference/flowhash.py is the same in plain Python. */
static __always_inline __u32 murmur_mix(__u32 h, __u32 k)
{
    k *= 0xcc9e2d51;
    k = rotl32(k, 15);
    k *= 0x1b873593;
    h ^= k;
    h = rotl32(h, 13);
    return h * 5 + 0xe6546b64;
}

static __always_inline __u32 murmur_final(__u32 h, __u32 len)
{
    h ^= len;
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

/* LIMIT is a compile-time bound (the key's size in words) so the loop unrolls; N <= LIMIT words are hashed. */
static __always_inline __u32 hash_words(const __u32 *words, int n, const int limit, __u32 seed)
{
    __u32 h = seed;
#pragma unroll
    for (int i = 0; i < limit; i++) {
        if (i < n)
            h = murmur_mix(h, words[i]);
    }
    return murmur_final(h, n * 4);
}

static __always_inline struct global_stats *globals(void)
{
    __u32 zero = 0;
    return global_stats.lookup(&zero);
}

/* bpf_ktime_get_coarse_ns(), read through this CPU's clock_cache (xdplb.h). */
static __always_inline __u64 coarse_ns(void)
{
    __u32 zero = 0;
    struct clock_cache *clock = clocks.lookup(&zero);
    __u64 jiffies = bpf_jiffies64();
    if (!clock)
        return bpf_ktime_get_coarse_ns();
    if (clock->jiffies != jiffies) {
        clock->jiffies = jiffies;
        clock->coarse_ns = bpf_ktime_get_coarse_ns();
    }
    return clock->coarse_ns;
}

/* Flood guard: true while this CPU's inserts in the current second stay under NEW_FLOW_RATE_LIMIT. */
static __always_inline int may_insert(struct global_stats *g)
{
    __u32 zero = 0;
    struct flood_guard *guard = flood_guards.lookup(&zero);
    if (!guard || NEW_FLOW_RATE_LIMIT == 0)
        return 1;
    __u64 now = coarse_ns();
    if (now - guard->window_start_ns > 1000000000ULL) {
        guard->window_start_ns = now;
        guard->inserts = 0;
    }
    if (guard->inserts >= NEW_FLOW_RATE_LIMIT) {
        if (g)
            g->flood_guard_skips++;
        return 0;
    }
    guard->inserts++;
    return 1;
}

static __always_inline struct backend *usable(__u32 slot, __u32 generation)
{
    struct backend *b = backends.lookup(&slot);
    if (b && (b->flags & BACKEND_USABLE) && b->generation == generation)
        return b;
    return NULL;
}

static __always_inline struct backend *maglev_pick(struct service *svc, __u32 hash, __u32 *slot)
{
    if (svc->table_size == 0)
        return NULL;
    __u32 table_id = svc->table_id;
    void *table = maglev_tables.lookup(&table_id);
    if (!table)
        return NULL;
    __u32 index = hash % svc->table_size;
    __u32 *entry = bpf_map_lookup_elem(table, &index);
    if (!entry)
        return NULL;
    *slot = *entry;
    struct backend *b = backends.lookup(slot);
    if (b && (b->flags & BACKEND_USABLE))
        return b;
    return NULL;
}

/* The source MAC for a frame leaving the ingress interface: its `interfaces` entry, or else the frame's own
 * destination if that is unicast (the interface accepted it, so it is the interface's). A broadcast or multicast
 * address is never a source: returns 0 when there is none to use. */
static __always_inline int source_mac(struct xdp_md *ctx, struct ethhdr *eth, __u8 *src)
{
    __u32 ifindex = ctx->ingress_ifindex;
    struct interface *iface = interfaces.lookup(&ifindex);
    if (iface && iface->known) {
        __builtin_memcpy(src, iface->mac, 6);
        return 1;
    }
    if (eth->h_dest[0] & 1)
        return 0;
    __builtin_memcpy(src, eth->h_dest, 6);
    return 1;
}

/* The source MAC for a frame redirected out of EGRESS: only its own `interfaces` entry will do (the frame's
 * destination is the ingress interface's address, not this one's). */
static __always_inline int egress_mac(__u32 egress, __u8 *src)
{
    struct interface *iface = interfaces.lookup(&egress);
    if (!iface || !iface->known)
        return 0;
    __builtin_memcpy(src, iface->mac, 6);
    return 1;
}

/* Counts a frame of LEN bytes forwarded to backend slot SLOT. */
static __always_inline void count_forward(struct backend *b, __u32 slot, __u32 len, int new_flow, int redirect,
                                          int icmp, struct global_stats *g)
{
    __u32 service_id = b->service_id;
    struct service_stats *ss = service_stats.lookup(&service_id);
    if (ss) {
        ss->packets++;
        ss->bytes += len;
        ss->new_flows += new_flow;
    }
    struct backend_stats *bs = backend_stats.lookup(&slot);
    if (bs) {
        bs->packets++;
        bs->bytes += len;
        bs->new_flows += new_flow;
    }
    if (g) {
        g->forwarded++;
        g->forwarded_bytes += len;
        g->icmp_too_big_forwarded += icmp;
        g->redirected += redirect;
    }
}

static __always_inline int tunnel(struct xdp_md *ctx, struct packet *pkt, struct backend *b, __u32 slot,
                                  int new_flow, struct global_stats *g);

/* Rewrite the frame towards the backend and count it; returns the XDP verdict: XDP_TX out of the ingress
 * interface, or XDP_REDIRECT out of the backend's own interface (tx_ports). A tunnelled backend: tunnel(). */
static __always_inline int forward(struct xdp_md *ctx, struct packet *pkt, struct backend *b, __u32 slot,
                                   int new_flow, struct global_stats *g)
{
    if (b->flags & BACKEND_TUNNEL)
        return tunnel(ctx, pkt, b, slot, new_flow, g);
    __u8 src[6];
    struct ethhdr *eth = pkt->eth;
    /* Out of the backend's own interface: XDP_TX when that is the ingress one (or unset), else XDP_REDIRECT. */
    __u32 egress = b->ifindex;
    int redirect = egress && egress != ctx->ingress_ifindex;
    if (!(redirect ? egress_mac(egress, src) : source_mac(ctx, eth, src))) {
        if (g)
            g->drop_no_source_mac++;
        return XDP_DROP;
    }
    /* Only records the target (the frame may change after it): before any rewrite, so a drop leaves it as it was. */
    if (redirect && tx_ports.redirect_map(egress, XDP_DROP) != XDP_REDIRECT) {
        if (g)
            g->drop_no_egress++;     /* its interface was detached: the loader takes such backends out */
        return XDP_DROP;
    }

    if (b->vlan) {
        if (pkt->vlan) {
            pkt->vlan->h_vlan_TCI = (pkt->vlan->h_vlan_TCI & bpf_htons(0xf000)) | bpf_htons(b->vlan & 0x0fff);
            eth->h_proto = bpf_htons(ETH_P_8021Q);  /* a backend's VLAN is 802.1Q: an 802.1ad S-tag becomes one */
        } else {
            /* Push a tag: grow the head by 4 bytes; the ethertype stays where it is relative to the end. */
            if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct vlan_hdr))) {
                if (g)
                    g->drop_vlan_push++;
                return XDP_DROP;
            }
            void *data = (void *)(long)ctx->data;
            void *data_end = (void *)(long)ctx->data_end;
            if (data + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) > data_end)
                return XDP_DROP;
            eth = data;
            __be16 *tci = data + sizeof(struct ethhdr);  /* TPID at 12, TCI at 14, inner ethertype still at 16 */
            eth->h_proto = bpf_htons(ETH_P_8021Q);
            *tci = bpf_htons(b->vlan & 0x0fff);
            pkt->len += sizeof(struct vlan_hdr);  /* counters count the frame that leaves */
        }
    }
    __builtin_memcpy(eth->h_dest, b->mac, 6);
    __builtin_memcpy(eth->h_source, src, 6);
    count_forward(b, slot, pkt->len, new_flow, redirect, pkt->icmp, g);
    return redirect ? XDP_REDIRECT : XDP_TX;
}

#define AF_INET 2
#define AF_INET6 10

/* The FIB's next hop towards DEST into HOP: returns 0 when there is none (no route or neighbour, forwarding off
 * on the ingress interface). The first lookup asks with the largest length, to learn the route's MTU (the FIB
 * says it when a length is over it); then a second one for the neighbour, unless the first already succeeded. */
static __always_inline int look_up_next_hop(struct xdp_md *ctx, struct next_hop *hop, struct tunnel_dest *dest,
                                            struct tunnel_config *cfg, int outer6)
{
    struct bpf_fib_lookup fib = {};
    fib.ifindex = ctx->ingress_ifindex;
    if (outer6) {
        fib.family = AF_INET6;
        __builtin_memcpy(fib.ipv6_src, cfg->source_v6, 16);
        __builtin_memcpy(fib.ipv6_dst, dest->addr, 16);
    } else {
        fib.family = AF_INET;
        fib.ipv4_src = cfg->source_v4;
        __builtin_memcpy(&fib.ipv4_dst, dest->addr, 4);
    }
    fib.tot_len = 0xffff;
    int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
    __u16 mtu = 0xffff;  /* SUCCESS: the route takes the largest length there is */
    if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        mtu = fib.mtu_result;
        fib.tot_len = 0;
        rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
    }
    if (rc != BPF_FIB_LKUP_RET_SUCCESS)
        return 0;
    hop->mtu = mtu;
    hop->ifindex = fib.ifindex;
    __builtin_memcpy(hop->dmac, fib.dmac, 6);
    __builtin_memcpy(hop->smac, fib.smac, 6);
    return 1;
}

#define TOO_BIG_QUOTE_V4 (sizeof(struct iphdr) + 8)     /* the client's IP header and its ports */
#define TOO_BIG_QUOTE_V6 (sizeof(struct ipv6hdr) + 8)
#define TOO_BIG_ROOM_V4 (sizeof(struct iphdr) + sizeof(struct icmphdr))
#define TOO_BIG_ROOM_V6 (sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr))

/* A client's packet that would be over the route's MTU once in the tunnel: the frame becomes an ICMP
 * "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too big" from the VIP to the client, quoting the
 * client's IP header and 8 bytes, with MTU the room the tunnel leaves, and goes back out of the interface it came
 * in on, as Katran does, so the client's path MTU discovery lowers its segments. An IPv4 packet without DF (or
 * with IP options) cannot be fragmented here: dropped, counted in drop_too_big. */
static __always_inline int too_big(struct xdp_md *ctx, struct packet *pkt, __u32 l2, int inner6, __u32 mtu,
                                   struct global_stats *g)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr eth;
    struct vlan_hdr vlan = {};
    __u8 src[6];
    if (data + sizeof(eth) + sizeof(vlan) + TOO_BIG_QUOTE_V6 > data_end || !source_mac(ctx, pkt->eth, src))
        goto drop;
    __builtin_memcpy(&eth, data, sizeof(eth));
    if (l2 != sizeof(eth))
        __builtin_memcpy(&vlan, data + sizeof(eth), sizeof(vlan));
    __builtin_memcpy(eth.h_dest, eth.h_source, 6);
    __builtin_memcpy(eth.h_source, src, 6);
    struct iphdr *client4 = data + l2;
    if (!inner6 && (client4->ihl != 5 || !(client4->frag_off & bpf_htons(0x4000))))
        goto drop;
    int room = inner6 ? TOO_BIG_ROOM_V6 : TOO_BIG_ROOM_V4;
    int quote = inner6 ? TOO_BIG_QUOTE_V6 : TOO_BIG_QUOTE_V4;
    /* Room for the new IP and ICMP headers in front of the client's, then only the quote after them. */
    if (bpf_xdp_adjust_head(ctx, -room))
        goto drop;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (bpf_xdp_adjust_tail(ctx, (int)(l2 + room + quote) - (int)(data_end - data)))
        goto drop;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (data + sizeof(eth) + sizeof(vlan) > data_end)
        goto drop;
    __builtin_memcpy(data, &eth, sizeof(eth));
    if (l2 != sizeof(eth))
        __builtin_memcpy(data + sizeof(eth), &vlan, sizeof(vlan));
    if (inner6) {
        struct ipv6hdr *ip6 = data + l2;
        struct icmp6hdr *icmp6 = (void *)(ip6 + 1);
        struct ipv6hdr *quoted = (void *)(icmp6 + 1);
        if ((void *)quoted + TOO_BIG_QUOTE_V6 > data_end)
            goto drop;
        ip6->version = 6;
        ip6->priority = 0;
        ip6->flow_lbl[0] = ip6->flow_lbl[1] = ip6->flow_lbl[2] = 0;
        ip6->payload_len = bpf_htons(sizeof(*icmp6) + TOO_BIG_QUOTE_V6);
        ip6->nexthdr = IPPROTO_ICMPV6;
        ip6->hop_limit = PING_REPLY_TTL;
        ip6->saddr = quoted->daddr;
        ip6->daddr = quoted->saddr;
        icmp6->icmp6_type = ICMPV6_PKT_TOOBIG;
        icmp6->icmp6_code = 0;
        icmp6->icmp6_cksum = 0;
        icmp6->icmp6_dataun.un_data32[0] = bpf_htonl(mtu);
        __u32 sum = sum_words(&ip6->saddr, 32, 0) + bpf_htons(sizeof(*icmp6) + TOO_BIG_QUOTE_V6)
                    + bpf_htons(IPPROTO_ICMPV6);
        icmp6->icmp6_cksum = fold(sum_words(icmp6, sizeof(*icmp6) + TOO_BIG_QUOTE_V6, sum));
    } else {
        struct iphdr *ip = data + l2;
        struct icmphdr *icmp = (void *)(ip + 1);
        struct iphdr *quoted = (void *)(icmp + 1);
        if ((void *)quoted + TOO_BIG_QUOTE_V4 > data_end)
            goto drop;
        ip->version = 4;
        ip->ihl = 5;
        ip->tos = 0;
        ip->tot_len = bpf_htons(TOO_BIG_ROOM_V4 + TOO_BIG_QUOTE_V4);
        ip->id = 0;
        ip->frag_off = 0;
        ip->ttl = PING_REPLY_TTL;
        ip->protocol = IPPROTO_ICMP;
        ip->check = 0;
        ip->saddr = quoted->daddr;
        ip->daddr = quoted->saddr;
        ip->check = ipv4_checksum(ip);
        icmp->type = ICMP_DEST_UNREACH;
        icmp->code = ICMP_FRAG_NEEDED;
        icmp->checksum = 0;
        icmp->un.frag.__unused = 0;
        icmp->un.frag.mtu = bpf_htons(mtu);
        icmp->checksum = fold(sum_words(icmp, sizeof(*icmp) + TOO_BIG_QUOTE_V4, 0));
    }
    if (g)
        g->icmp_too_big_sent++;
    return XDP_TX;
drop:
    if (g)
        g->drop_too_big++;
    return XDP_DROP;
}

/* Layer-3 DSR: the inner IP packet (the client's, untouched) goes to the backend's own address inside an outer
 * IPv4 or IPv6 header from the node's tunnel source, and for GUE a UDP header whose source port comes from the
 * flow hash (RFC 7605's 49152-65535), so the network's ECMP and the backend's RSS spread flows. The outer frame's
 * next hop and interface come from the kernel's FIB (bpf_fib_lookup: routes decide as they do for the host; it
 * wants forwarding on for the ingress interface), cached per CPU for up to a second (struct next_hop); a packet
 * over the route's MTU once encapsulated is answered by too_big(). A VLAN tag on the frame is left behind: the
 * FIB's interface is the one the outer frame needs. */
static __always_inline int tunnel(struct xdp_md *ctx, struct packet *pkt, struct backend *b, __u32 slot,
                                  int new_flow, struct global_stats *g)
{
    __u32 zero = 0;
    struct tunnel_dest *dest = tunnel_dests.lookup(&slot);
    struct tunnel_config *cfg = tunnel_configs.lookup(&zero);
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (!dest || !cfg)
        return XDP_DROP;
    int gue = b->flags & BACKEND_GUE, outer6 = dest->family == 6;
    __u32 l2 = pkt->vlan ? sizeof(struct ethhdr) + sizeof(struct vlan_hdr) : sizeof(struct ethhdr);
    __u8 *inner = data + l2;
    if ((void *)(inner + 2) > data_end)
        return XDP_DROP;
    int inner6 = (inner[0] >> 4) == 6;
    __u8 tos = inner6 ? (__u8)((inner[0] << 4) | (inner[1] >> 4)) : inner[1];  /* traffic class or TOS */
    __u32 inner_len = pkt->ip_len;  /* what is in the tunnel: the IP packet, not the frame's padding */
    if (!inner_len || inner_len > pkt->len - l2)
        return XDP_DROP;  /* cannot happen: the parse checked it */
    __u32 outer_len = (outer6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) + (gue ? sizeof(struct udphdr) : 0);

    struct next_hop *hop = next_hops.lookup(&slot);
    if (!hop)
        return XDP_DROP;
    __u64 now = coarse_ns();
    if (hop->generation != b->generation || now - hop->at_ns > NEXT_HOP_TTL_NS || !hop->at_ns) {
        if (!look_up_next_hop(ctx, hop, dest, cfg, outer6)) {
            if (g)
                g->drop_no_route++;
            return XDP_DROP;
        }
        hop->generation = b->generation;
        hop->at_ns = now;
    }
    if (inner_len + outer_len > hop->mtu) {
        if (pkt->icmp) {  /* never an ICMP error about an ICMP error (RFC 1122 3.2.2, RFC 4443 2.4) */
            if (g)
                g->drop_too_big++;
            return XDP_DROP;
        }
        return too_big(ctx, pkt, l2, inner6, hop->mtu - outer_len, g);
    }
    __u32 egress = hop->ifindex;
    int redirect = egress != ctx->ingress_ifindex;
    if (redirect && tx_ports.redirect_map(egress, XDP_DROP) != XDP_REDIRECT) {
        if (g)
            g->drop_no_egress++;
        return XDP_DROP;
    }
    if (bpf_xdp_adjust_head(ctx, (int)l2 - (int)(sizeof(struct ethhdr) + outer_len))) {
        if (g)
            g->drop_no_headroom++;
        return XDP_DROP;
    }
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    void *outer = eth + 1;
    if (outer + sizeof(struct ipv6hdr) + sizeof(struct udphdr) > data_end)  /* any inner packet is longer */
        return XDP_DROP;
    __builtin_memcpy(eth->h_dest, hop->dmac, 6);
    __builtin_memcpy(eth->h_source, hop->smac, 6);
    __u8 proto = tunnel_protocol(gue, inner6);
    struct udphdr *udp;
    if (outer6) {
        struct ipv6hdr *ip6 = outer;
        eth->h_proto = bpf_htons(ETH_P_IPV6);
        outer_ipv6(ip6, tos, pkt->hash, inner_len + (gue ? sizeof(struct udphdr) : 0), proto,
                   (const struct in6_addr *)cfg->source_v6, dest->addr);
        udp = (void *)(ip6 + 1);
    } else {
        struct iphdr *ip = outer;
        eth->h_proto = bpf_htons(ETH_P_IP);
        outer_ipv4(ip, tos, inner_len + outer_len, proto, cfg->source_v4, dest->addr);
        udp = (void *)(ip + 1);
    }
    if (gue) {
        if ((void *)(udp + 1) > data_end)
            return XDP_DROP;
        outer_gue(udp, pkt->hash, cfg->gue_port, inner_len + sizeof(struct udphdr));
    }
    if (g)
        g->tunnelled++;
    count_forward(b, slot, inner_len + sizeof(struct ethhdr) + outer_len, new_flow, redirect, pkt->icmp, g);
    return redirect ? XDP_REDIRECT : XDP_TX;
}

static __always_inline int no_backend(struct service *svc, struct global_stats *g)
{
    struct service_stats *ss = service_stats.lookup(&svc->id);
    if (ss)
        ss->drop_no_backend++;
    if (g)
        g->drop_no_backend++;
    return XDP_DROP;
}

/* The flow table. A flow's key hashes (with a per-load random seed, so nobody can aim collisions at a flow) to
 * one set of FLOW_WAYS entries. A hit refreshes the entry's age at most once a second; an insert takes an empty
 * entry or else the one idle longest: LRU within the set. Entries are written without locks; a check word over
 * key and value makes an entry torn by two CPUs writing at once read as empty, costing one Maglev lookup. */
static __always_inline __u32 flow_check(__u32 key_hash, __u32 backend, __u32 generation)
{
    return key_hash ^ (backend * 0x9e3779b1) ^ generation ^ 0x5bd1e995;
}

/* Keys are 8-byte aligned (xdplb.h), so whole __u64 words compare them. */
_Static_assert(_Alignof(struct flow_key_v4) == 8 && sizeof(struct flow_key_v4) % 8 == 0, "flow_key_v4 alignment");
_Static_assert(_Alignof(struct flow_key_v6) == 8 && sizeof(struct flow_key_v6) % 8 == 0, "flow_key_v6 alignment");
_Static_assert(sizeof(struct flow_entry_v4) == 32 && sizeof(struct flow_entry_v6) == 56, "flow entry layout");
static __always_inline int keys_equal(const __u64 *a, const __u64 *b, const int words64)
{
    __u64 diff = 0;
#pragma unroll
    for (int i = 0; i < words64; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

/* Whether the backend slot of an entry can still carry its flow: a stale entry (retired or reused slot, MAC lost)
 * is as good as free. */
static __always_inline int flow_usable(__u32 slot, __u32 generation)
{
    struct backend *b = backends.lookup(&slot);
    return generation && b && (b->flags & BACKEND_USABLE) && b->generation == generation;
}

/* flow_find returns the way holding KEY (or -1) and a copy of its flow, read once (one 8-byte load) and checked
 * against the check word (read once): the caller uses the copy only, never the shared entry again. An entry of
 * KEY whose check fails (torn by two writers) is returned with generation 0, which no backend has: the flow
 * selects again and is stored back into the same way.
 * flow_store writes into WAY when the flow was found there; otherwise into an empty or stale way, or else the
 * one idle longest (LRU within the set), counting an eviction when that one was active within FLOW_ACTIVE_UNITS. */
#define FLOW_SET_OPS(FAMILY)                                                                                   \
    static __always_inline int flow_find_##FAMILY(struct flow_set_##FAMILY *set, struct flow_key_##FAMILY *key, \
                                                  __u32 key_hash, struct flow *out)                           \
    {                                                                                                         \
        _Pragma("unroll") for (int w = 0; w < FLOW_WAYS; w++)                                                 \
        {                                                                                                     \
            struct flow_entry_##FAMILY *e = &set->way[w];                                                    \
            if (!keys_equal((const __u64 *)&e->key, (const __u64 *)key, sizeof(*key) / 8))                   \
                continue;                                                                                     \
            __u64 word = *(volatile __u64 *)&e->flow;                                                         \
            __u32 check = *(volatile __u32 *)&e->check;                                                       \
            __builtin_memcpy(out, &word, sizeof(*out));                                                       \
            if (check != flow_check(key_hash, out->backend, out->generation))                                 \
                out->generation = 0;                                                                          \
            return w;                                                                                         \
        }                                                                                                     \
        return -1;                                                                                            \
    }                                                                                                         \
    static __always_inline void flow_store_##FAMILY(struct flow_set_##FAMILY *set, int way,                 \
                                                    struct flow_key_##FAMILY *key, __u32 key_hash,          \
                                                    struct flow *flow, __u32 now, struct global_stats *g)   \
    {                                                                                                         \
        int victim = way;                                                                                     \
        if (victim < 0) {                                                                                     \
            __u32 oldest = 0xffffffff;                                                                        \
            victim = 0;                                                                                       \
            _Pragma("unroll") for (int w = 0; w < FLOW_WAYS; w++)                                             \
            {                                                                                                 \
                struct flow_entry_##FAMILY *e = &set->way[w];                                                \
                __u32 age = flow_usable(e->flow.backend, e->flow.generation) ? e->seen : 0;                   \
                if (age < oldest) {                                                                           \
                    oldest = age;                                                                             \
                    victim = w;                                                                               \
                }                                                                                             \
            }                                                                                                 \
            if (g && oldest && now - oldest < FLOW_ACTIVE_UNITS)                                              \
                g->flow_evictions++;                                                                          \
        }                                                                                                     \
        struct flow_entry_##FAMILY *e = &set->way[victim & (FLOW_WAYS - 1)];                                 \
        e->key = *key;                                                                                        \
        e->flow = *flow;                                                                                      \
        e->seen = now;                                                                                        \
        e->check = flow_check(key_hash, flow->backend, flow->generation);                                     \
    }

static __always_inline __u32 flow_hash_of_v4(struct flow_key_v4 *key)
{
    return hash_words((const __u32 *)key, sizeof(*key) / 4, sizeof(*key) / 4, FLOW_SEED);
}

static __always_inline __u32 flow_hash_of_v6(struct flow_key_v6 *key)
{
    return hash_words((const __u32 *)key, sizeof(*key) / 4, sizeof(*key) / 4, FLOW_SEED);
}

FLOW_SET_OPS(v4)
FLOW_SET_OPS(v6)

static __always_inline __u32 now_seconds(void)
{
    return coarse_ns() >> 30;  /* ~1.07 s units; a jiffy of resolution is plenty */
}

/* An established flow: forward along its entry if the backend is still usable. Returns -1 when it is not. */
static __always_inline int follow_flow(struct xdp_md *ctx, struct packet *pkt, struct flow f, __u32 *seen,
                                       struct global_stats *g)
{
    __u32 slot = f.backend;
    struct backend *b = usable(slot, f.generation);
    if (!b)
        return -1;
    __u32 now = now_seconds();
    if (*seen != now)
        *seen = now;
    if (g)
        g->flow_hits++;
    return forward(ctx, pkt, b, slot, pkt->syn, g);
}

/* A flow the table does not know: select by Maglev over the key's words. Sets *insert when the caller should
 * store NEW in the family's flow table. */
static __always_inline int select_backend(struct xdp_md *ctx, struct packet *pkt, struct service *svc,
                                          const __u32 *words, int nwords, int sticky_words, __u8 proto,
                                          struct flow *new, int *insert, struct global_stats *g)
{
    __u32 slot = 0;
    *insert = 0;
    if (g)
        g->flow_misses++;
    __u32 hash = hash_words(words, (svc->flags & SERVICE_STICKY) ? sticky_words : nwords, nwords, HASH_SEED);
    struct backend *b = maglev_pick(svc, hash, &slot);
    if (!b)
        return no_backend(svc, g);
    /* A SYN never creates an entry, so a SYN flood cannot evict established flows; the first ACK does. */
    if (!pkt->syn && !pkt->icmp && may_insert(g)) {
        new->backend = slot;
        new->generation = b->generation;
        *insert = 1;
        if (g)
            g->flow_inserts++;
    }
    return forward(ctx, pkt, b, slot, pkt->icmp ? 0 : (proto == IPPROTO_TCP ? pkt->syn : 1), g);
}

/* Reads the L4 ports (and TCP flags); returns 0 if the header is truncated. */
static __always_inline int read_ports(void *l4, void *data_end, __u8 proto, __be16 *sport, __be16 *dport,
                                      __u8 *syn, __u32 avail)
{
    if (proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end || avail < sizeof(*th) || th->doff < 5 || th->doff * 4 > avail)
            return 0;
        *sport = th->source;
        *dport = th->dest;
        *syn = TCP_FLAG_SYN_ONLY(th);
        return 1;
    }
    struct udphdr *uh = l4;
    if ((void *)(uh + 1) > data_end || avail < sizeof(*uh))
        return 0;
    *sport = uh->source;
    *dport = uh->dest;
    *syn = 0;
    return 1;
}

/* A fragment or malformed packet: dropped and counted if it is for a VIP address, else left to the kernel. */
static __always_inline int drop_if_vip(int is_vip, struct global_stats *g, int fragment)
{
    if (!is_vip)
        return XDP_PASS;
    if (g) {
        if (fragment)
            g->drop_fragment++;
        else
            g->drop_malformed++;
    }
    return XDP_DROP;
}

static __always_inline int drop_or_pass_v4(__be32 daddr, struct global_stats *g, int fragment)
{
    return drop_if_vip(vip_addrs_v4.lookup(&daddr) != NULL, g, fragment);
}

static __always_inline int drop_or_pass_v6(struct in6_addr *daddr, struct global_stats *g, int fragment)
{
    struct in6_addr addr = *daddr;
    return drop_if_vip(vip_addrs_v6.lookup(&addr) != NULL, g, fragment);
}

static __always_inline int balance_flow_v4(struct xdp_md *ctx, struct packet *pkt, struct flow_key_v4 *key,
                                           struct global_stats *g);
static __always_inline int balance_flow_v6(struct xdp_md *ctx, struct packet *pkt, struct flow_key_v6 *key,
                                           struct global_stats *g);

/* Echo to a VIP address, answered here (ANSWER_PING): a balancer that announces a VIP answers ping for it, as
 * xvs does. The request goes back out of the interface it came in on with MACs and addresses swapped, TTL
 * PING_REPLY_TTL and the checksums updated for what changed. Anything odd (IP options, extension headers, no
 * source MAC to use) is left to the kernel. */
static __always_inline int echo_v4(struct xdp_md *ctx, struct packet *pkt, struct iphdr *iph, void *data_end,
                                   struct global_stats *g)
{
    struct icmphdr *icmp = (void *)(iph + 1);
    if (!ANSWER_PING || iph->ihl != 5 || (void *)(icmp + 1) > data_end || icmp->code != 0)
        return XDP_PASS;
    __be32 vip = iph->daddr;
    __u8 src[6];
    if (!vip_addrs_v4.lookup(&vip) || !source_mac(ctx, pkt->eth, src))
        return XDP_PASS;
    struct ethhdr *eth = pkt->eth;
    __builtin_memcpy(eth->h_dest, eth->h_source, 6);
    __builtin_memcpy(eth->h_source, src, 6);
    iph->daddr = iph->saddr;
    iph->saddr = vip;
    __u16 *ttl_proto = (__u16 *)&iph->ttl;
    __u16 old = *ttl_proto;
    iph->ttl = PING_REPLY_TTL;
    csum_replace_word(&iph->check, old, *ttl_proto);
    icmp->type = ICMP_ECHOREPLY;
    csum_replace_word(&icmp->checksum, bpf_htons(ICMP_ECHO << 8), bpf_htons(ICMP_ECHOREPLY << 8));
    if (g)
        g->icmp_echo_replies++;
    return XDP_TX;
}

static __always_inline int echo_v6(struct xdp_md *ctx, struct packet *pkt, struct ipv6hdr *ip6, void *data_end,
                                   struct global_stats *g)
{
    struct icmp6hdr *icmp6 = (void *)(ip6 + 1);
    if (!ANSWER_PING || ip6->nexthdr != IPPROTO_ICMPV6 || (void *)(icmp6 + 1) > data_end || icmp6->icmp6_code != 0)
        return XDP_PASS;
    struct in6_addr vip = ip6->daddr;
    __u8 src[6];
    if (!vip_addrs_v6.lookup(&vip) || !source_mac(ctx, pkt->eth, src))
        return XDP_PASS;
    struct ethhdr *eth = pkt->eth;
    __builtin_memcpy(eth->h_dest, eth->h_source, 6);
    __builtin_memcpy(eth->h_source, src, 6);
    ip6->daddr = ip6->saddr;
    ip6->saddr = vip;              /* the pseudo-header's sum does not change: the same two addresses */
    ip6->hop_limit = PING_REPLY_TTL;
    icmp6->icmp6_type = ICMPV6_ECHO_REPLY;
    csum_replace_word(&icmp6->icmp6_cksum, bpf_htons(ICMPV6_ECHO_REQUEST << 8), bpf_htons(ICMPV6_ECHO_REPLY << 8));
    if (g)
        g->icmp_echo_replies++;
    return XDP_TX;
}

/* ICMP "fragmentation needed" / ICMPv6 "packet too big" about a backend's reply (VIP -> client) reaches the
 * balancer, since the VIP routes here: send it to the backend that owns the client's flow, so path MTU discovery
 * works through DSR. The quoted header, reversed, is that flow. */
static __always_inline int too_big_v4(struct xdp_md *ctx, struct packet pkt, struct iphdr *iph, void *data_end,
                                      struct global_stats *g)
{
    struct icmphdr *icmp = (void *)iph + iph->ihl * 4;
    if (iph->ihl < 5 || (void *)(icmp + 1) > data_end)
        return XDP_PASS;
    if (icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_FRAG_NEEDED)
        return XDP_PASS;
    struct iphdr *inner = (void *)(icmp + 1);
    if ((void *)(inner + 1) > data_end || inner->ihl < 5 || inner->saddr != iph->daddr)
        return XDP_PASS;
    if (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP)
        return XDP_PASS;
    __be16 *ports = (void *)inner + inner->ihl * 4;
    if ((void *)(ports + 2) > data_end)
        return XDP_PASS;
    struct flow_key_v4 key = {.saddr = inner->daddr, .daddr = inner->saddr, .sport = ports[1], .dport = ports[0],
                              .proto = inner->protocol};
    pkt.icmp = 1;
    return balance_flow_v4(ctx, &pkt, &key, g);
}

static __always_inline int too_big_v6(struct xdp_md *ctx, struct packet pkt, struct ipv6hdr *ip6, void *icmp6,
                                      void *data_end, struct global_stats *g)
{
    __u8 *type = icmp6;
    struct ipv6hdr *inner = icmp6 + 8;  /* type, code, checksum, MTU */
    if ((void *)(inner + 1) > data_end || type[0] != ICMPV6_PKT_TOOBIG)
        return XDP_PASS;
    if (inner->nexthdr != IPPROTO_TCP && inner->nexthdr != IPPROTO_UDP)
        return XDP_PASS;
    __be16 *ports = (void *)(inner + 1);
    if ((void *)(ports + 2) > data_end)
        return XDP_PASS;
    struct flow_key_v6 key = {.sport = ports[1], .dport = ports[0], .proto = inner->nexthdr};
    __builtin_memcpy(key.saddr, &inner->daddr, 16);
    __builtin_memcpy(key.daddr, &inner->saddr, 16);
    const __u32 *quoted = (const __u32 *)key.daddr, *ours = (const __u32 *)&ip6->daddr;
    if ((quoted[0] ^ ours[0]) | (quoted[1] ^ ours[1]) | (quoted[2] ^ ours[2]) | (quoted[3] ^ ours[3]))
        return XDP_PASS;
    pkt.icmp = 1;
    return balance_flow_v6(ctx, &pkt, &key, g);
}

static __always_inline int balance_v4(struct xdp_md *ctx, struct packet pkt, struct iphdr *iph, void *data_end,
                                      struct global_stats *g)
{
    if ((void *)(iph + 1) > data_end)
        return XDP_PASS;
    __u32 ihl = iph->ihl * 4;
    __u32 total = bpf_ntohs(iph->tot_len);
    /* Malformed: not version 4, header length below 20, total length shorter than the header or longer than the
     * bytes in the frame (a frame may be longer: Ethernet padding). */
    if (iph->version != 4 || ihl < sizeof(*iph) || total < ihl || total > (__u32)(data_end - (void *)iph))
        return drop_or_pass_v4(iph->daddr, g, 0);
    if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP && iph->protocol != IPPROTO_ICMP)
        return XDP_PASS;
    pkt.ip_len = total;
    if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
        return drop_or_pass_v4(iph->daddr, g, 1);
    if (iph->protocol == IPPROTO_ICMP) {
        struct icmphdr *icmp = (void *)(iph + 1);
        if (ihl == sizeof(*iph) && (void *)(icmp + 1) <= data_end && icmp->type == ICMP_ECHO)
            return echo_v4(ctx, &pkt, iph, data_end, g);
        return too_big_v4(ctx, pkt, iph, data_end, g);
    }
    void *l4 = (void *)iph + ihl;   /* honours IP options */
    struct flow_key_v4 key = {.saddr = iph->saddr, .daddr = iph->daddr, .proto = iph->protocol};
    if (!read_ports(l4, data_end, key.proto, &key.sport, &key.dport, &pkt.syn, total - ihl))
        return drop_or_pass_v4(iph->daddr, g, 0);

    return balance_flow_v4(ctx, &pkt, &key, g);
}

/* Where the flow KEY goes. Flow table first: an established flow needs no service lookup (a removed service's
 * backends are retired, so its flows are never followed). */
static __always_inline int balance_flow_v4(struct xdp_md *ctx, struct packet *pkt, struct flow_key_v4 *key,
                                           struct global_stats *g)
{
    __u32 key_hash = flow_hash_of_v4(key);
    pkt->hash = key_hash;
    __u32 set_index = key_hash & (FLOW_SETS - 1);
    struct flow_set_v4 *set = flows_v4.lookup(&set_index);
    if (!set)
        return XDP_PASS;
    struct flow found;
    int way = flow_find_v4(set, key, key_hash, &found);
    int verdict = way >= 0 ? follow_flow(ctx, pkt, found, &set->way[way & (FLOW_WAYS - 1)].seen, g) : -1;
    if (verdict >= 0)
        return verdict;
    struct service_key_v4 skey = {.addr = key->daddr, .port = key->dport, .proto = key->proto};
    struct service *svc = services_v4.lookup(&skey);
    if (!svc)
        return XDP_PASS;
    struct flow new;
    int insert;
    verdict = select_backend(ctx, pkt, svc, (const __u32 *)key, 4, 2, key->proto, &new, &insert, g);
    if (insert)
        flow_store_v4(set, way, key, key_hash, &new, now_seconds(), g);
    return verdict;
}

static __always_inline int balance_v6(struct xdp_md *ctx, struct packet pkt, struct ipv6hdr *ip6, void *data_end,
                                      struct global_stats *g)
{
    if ((void *)(ip6 + 1) > data_end)
        return XDP_PASS;
    __u8 nexthdr = ip6->nexthdr;
    void *l4 = ip6 + 1;
    __u32 avail = bpf_ntohs(ip6->payload_len);
    /* Malformed: not version 6, or a payload longer than the bytes in the frame. */
    if (ip6->version != 6 || avail > (__u32)(data_end - l4))
        return drop_or_pass_v6(&ip6->daddr, g, 0);
    pkt.ip_len = sizeof(*ip6) + avail;
#pragma unroll
    for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
        if (nexthdr == IPPROTO_TCP || nexthdr == IPPROTO_UDP || nexthdr == IPPROTO_ICMPV6)
            break;
        if (nexthdr == IPPROTO_FRAGMENT)
            return drop_or_pass_v6(&ip6->daddr, g, 1);
        if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING && nexthdr != IPPROTO_DSTOPTS)
            return XDP_PASS;
        __u8 *ext = l4;
        if ((void *)(ext + 2) > data_end)
            return drop_or_pass_v6(&ip6->daddr, g, 0);
        __u32 len = (ext[1] + 1) * 8;
        if (len > avail)
            return drop_or_pass_v6(&ip6->daddr, g, 0);
        nexthdr = ext[0];
        l4 += len;
        avail -= len;
    }
    if (nexthdr == IPPROTO_ICMPV6) {
        __u8 *type = l4;
        if ((void *)(type + 1) <= data_end && type[0] == ICMPV6_ECHO_REQUEST)
            return echo_v6(ctx, &pkt, ip6, data_end, g);
        return too_big_v6(ctx, pkt, ip6, l4, data_end, g);
    }
    if (nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
        return XDP_PASS;
    struct flow_key_v6 key = {.proto = nexthdr};
    __builtin_memcpy(key.saddr, &ip6->saddr, 16);
    __builtin_memcpy(key.daddr, &ip6->daddr, 16);
    if (!read_ports(l4, data_end, key.proto, &key.sport, &key.dport, &pkt.syn, avail))
        return drop_or_pass_v6(&ip6->daddr, g, 0);

    return balance_flow_v6(ctx, &pkt, &key, g);
}

static __always_inline int balance_flow_v6(struct xdp_md *ctx, struct packet *pkt, struct flow_key_v6 *key,
                                           struct global_stats *g)
{
    __u32 key_hash = flow_hash_of_v6(key);
    pkt->hash = key_hash;
    __u32 set_index = key_hash & (FLOW_SETS - 1);
    struct flow_set_v6 *set = flows_v6.lookup(&set_index);
    if (!set)
        return XDP_PASS;
    struct flow found;
    int way = flow_find_v6(set, key, key_hash, &found);
    int verdict = way >= 0 ? follow_flow(ctx, pkt, found, &set->way[way & (FLOW_WAYS - 1)].seen, g) : -1;
    if (verdict >= 0)
        return verdict;
    struct service_key_v6 skey = {.port = key->dport, .proto = key->proto};
    __builtin_memcpy(skey.addr, key->daddr, 16);
    struct service *svc = services_v6.lookup(&skey);
    if (!svc)
        return XDP_PASS;
    struct flow new;
    int insert;
    verdict = select_backend(ctx, pkt, svc, (const __u32 *)key, 10, 8, key->proto, &new, &insert, g);
    if (insert)
        flow_store_v6(set, way, key, key_hash, &new, now_seconds(), g);
    return verdict;
}

int xdplb(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct global_stats *g = globals();
    struct packet pkt = {.eth = data, .len = data_end - data};
    struct ethhdr *eth = data;
    int verdict = XDP_PASS;

    if (g)
        g->rx_packets++;
    if ((void *)(eth + 1) > data_end) {
        int zero = 0;
        abi.lookup(&zero); /* a map the code never names is not among the program's maps: this keeps `abi` there */
        goto out;
    }
    __be16 proto = eth->h_proto;
    void *l3 = eth + 1;
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
        struct vlan_hdr *vh = l3;
        if ((void *)(vh + 1) > data_end)
            goto out;
        pkt.vlan = vh;
        proto = vh->h_vlan_encapsulated_proto;
        l3 = vh + 1;
    }
    if (proto == bpf_htons(ETH_P_IP))
        verdict = balance_v4(ctx, pkt, l3, data_end, g);
    else if (proto == bpf_htons(ETH_P_IPV6))
        verdict = balance_v6(ctx, pkt, l3, data_end, g);
out:
    if (verdict == XDP_PASS && g)
        g->passed++;
    return verdict;
}
