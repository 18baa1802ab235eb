/* xdplb check paths: health checks sent through the data path (tc programs on the balancer's interfaces).
 *
 * A checker's socket is connected to a backend's own address, so the kernel routes it and resolves its next hop as
 * for any check, and carries SO_MARK = CHECK_MARK_BASE | id. On the way out (tc egress) a packet with that mark gets
 * the VIP of path `id` as its destination and, for a tunnelled backend, an outer IPIP or GUE header to the backend's
 * address: the backend receives what the data plane would deliver to it. It answers from the VIP; on the way in
 * (tc ingress) that reply's source becomes the backend's address again, so the checker's socket takes it. A backend
 * that does not hold the VIP does not answer, and the check fails.
 *
 * A marked packet is never sent on unchanged: with no path for its id, or not addressed to the path's backend, it is
 * dropped and counted. Sent to the backend's own address it would pass a check that tested nothing.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#include "encap.h"

#ifndef CHECK_MARK_BASE
#define CHECK_MARK_BASE 0x58440000u
#endif
#define CHECK_MARK_MASK 0xffff0000u
#ifndef MAX_CHECK_PATHS
#define MAX_CHECK_PATHS 65536
#endif
#ifndef MAX_CHECK_REPLIES
#define MAX_CHECK_REPLIES 65536
#endif

#define PATH_L2 0
#define PATH_IPIP 1
#define PATH_GUE 2

/* Where checks of one (VIP, backend) go. Addresses are 16 bytes; IPv4 uses the first 4. */
struct check_path {
    __u8 vip[16];                  /* the destination the backend sees */
    __u8 backend[16];              /* the socket's destination; a tunnel's outer destination */
    __u8 source[16];               /* a tunnel's outer source (the node's tunnel source) */
    __u8 family;                   /* 4 or 6: of the VIP, the backend and the tunnel alike */
    __u8 mode;                     /* PATH_L2, PATH_IPIP, PATH_GUE */
    __be16 gue_port;
};

/* A check's connection as its reply arrives: from the VIP to the checker's address and port. */
struct reply_key {
    __u8 vip[16];
    __u8 local[16];
    __be16 vip_port;
    __be16 local_port;
    __u8 family;
    __u8 proto;
    __u8 pad[2];
};

struct reply_value {
    __u8 backend[16];
};

/* Per-CPU counters, summed by bpf/check_path.py (the same names, in this order). */
struct check_path_stats {
    __u64 sent;                    /* check packets given their VIP */
    __u64 tunnelled;               /* of them, encapsulated */
    __u64 replies;                 /* replies from a VIP given back to their checker */
    __u64 unknown;                 /* marked, but no path has the id: dropped */
    __u64 refused;                 /* marked, but not TCP or UDP to the path's backend, or a helper failed: dropped */
};

BPF_HASH(check_paths, __u32, struct check_path, MAX_CHECK_PATHS);
BPF_TABLE("lru_hash", struct reply_key, struct reply_value, check_replies, MAX_CHECK_REPLIES);
BPF_PERCPU_ARRAY(check_path_stats, struct check_path_stats, 1);

/* The layer-3 and layer-4 offsets and fields of an untagged IPv4 or IPv6 packet carrying TCP or UDP. */
struct parsed {
    __u8 saddr[16];
    __u8 daddr[16];
    __u32 l4;                      /* offset of the TCP or UDP header */
    __u32 check;                   /* offset of its checksum */
    __be16 sport;
    __be16 dport;
    __u8 family;
    __u8 proto;
};

static __always_inline int parse(struct __sk_buff *skb, struct parsed *out)
{
    __be16 proto;
    if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
        return -1;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) || ip.ihl < 5)
            return -1;
        if (ip.frag_off & bpf_htons(0x3fff))
            return -1;             /* a fragment: no ports to read */
        __builtin_memcpy(out->saddr, &ip.saddr, 4);
        __builtin_memcpy(out->daddr, &ip.daddr, 4);
        out->family = 4;
        out->proto = ip.protocol;
        out->l4 = ETH_HLEN + ip.ihl * 4;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
            return -1;
        __builtin_memcpy(out->saddr, &ip6.saddr, 16);
        __builtin_memcpy(out->daddr, &ip6.daddr, 16);
        out->family = 6;
        out->proto = ip6.nexthdr;  /* a checker's packets carry no extension headers */
        out->l4 = ETH_HLEN + sizeof(ip6);
    } else {
        return -1;
    }
    if (out->proto == IPPROTO_TCP)
        out->check = out->l4 + offsetof(struct tcphdr, check);
    else if (out->proto == IPPROTO_UDP)
        out->check = out->l4 + offsetof(struct udphdr, check);
    else
        return -1;
    __be16 ports[2];
    if (bpf_skb_load_bytes(skb, out->l4, ports, sizeof(ports)))
        return -1;
    out->sport = ports[0];
    out->dport = ports[1];
    return 0;
}

/* Replace the address at OFFSET (4 or 16 bytes by FAMILY) from OLD to NEW, with the IPv4 header's checksum and
 * the TCP/UDP checksum's pseudo-header following. */
static __always_inline int rewrite(struct __sk_buff *skb, struct parsed *p, __u32 offset, __u8 *old, __u8 *new)
{
    __u64 udp = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
    if (p->family == 4) {
        __be32 from, to;
        __builtin_memcpy(&from, old, 4);
        __builtin_memcpy(&to, new, 4);
        if (bpf_l4_csum_replace(skb, p->check, from, to, BPF_F_PSEUDO_HDR | udp | sizeof(to)))
            return -1;
        if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), from, to, sizeof(to)))
            return -1;
        return bpf_skb_store_bytes(skb, offset, &to, sizeof(to), 0);
    }
    __be32 from[4], to[4];
    __builtin_memcpy(from, old, 16);
    __builtin_memcpy(to, new, 16);
    __s64 diff = bpf_csum_diff(from, sizeof(from), to, sizeof(to), 0);
    if (diff < 0 || bpf_l4_csum_replace(skb, p->check, 0, diff, BPF_F_PSEUDO_HDR | udp))
        return -1;
    return bpf_skb_store_bytes(skb, offset, to, sizeof(to), 0);
}

static __always_inline int same_address(const __u8 *a, const __u8 *b)
{
    const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Room for the outer headers after the Ethernet header, then the headers themselves. */
static __always_inline int encapsulate(struct __sk_buff *skb, struct check_path *path)
{
    int gue = path->mode == PATH_GUE;
    __u32 ip_len = path->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    __u32 outer = ip_len + (gue ? sizeof(struct udphdr) : 0);
    __u64 flags = (path->family == 4 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV6)
                  | (gue ? BPF_F_ADJ_ROOM_ENCAP_L4_UDP : 0);
    __u32 hash = bpf_get_hash_recalc(skb);
    if (bpf_skb_adjust_room(skb, outer, BPF_ADJ_ROOM_MAC, flags))
        return -1;
    __u32 payload = skb->len - ETH_HLEN - ip_len;  /* what follows the outer IP header */
    __u8 proto = tunnel_protocol(gue, path->family == 6);
    if (path->family == 4) {
        struct iphdr ip = {};
        __be32 source;
        __builtin_memcpy(&source, path->source, 4);
        outer_ipv4(&ip, 0, payload + ip_len, proto, source, path->backend);
        if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0))
            return -1;
    } else {
        struct ipv6hdr ip6 = {};
        outer_ipv6(&ip6, 0, hash, payload, proto, (const struct in6_addr *)path->source, path->backend);
        if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0))
            return -1;
    }
    if (gue) {
        struct udphdr udp;
        outer_gue(&udp, hash, path->gue_port, payload);
        if (bpf_skb_store_bytes(skb, ETH_HLEN + ip_len, &udp, sizeof(udp), 0))
            return -1;
    }
    return 0;
}

int check_path_egress(struct __sk_buff *skb)
{
    if ((skb->mark & CHECK_MARK_MASK) != CHECK_MARK_BASE)
        return TC_ACT_OK;
    __u32 zero = 0;
    struct check_path_stats *stats = check_path_stats.lookup(&zero);
    if (!stats)
        return TC_ACT_SHOT;
    __u32 id = skb->mark & ~CHECK_MARK_MASK;
    struct check_path *path = check_paths.lookup(&id);
    if (!path) {
        stats->unknown++;
        return TC_ACT_SHOT;
    }
    struct parsed p = {};
    if (parse(skb, &p) || p.family != path->family || !same_address(p.daddr, path->backend)) {
        stats->refused++;
        return TC_ACT_SHOT;
    }
    struct reply_key key = {.vip_port = p.dport, .local_port = p.sport, .family = p.family, .proto = p.proto};
    __builtin_memcpy(key.vip, path->vip, 16);
    __builtin_memcpy(key.local, p.saddr, 16);
    struct reply_value value = {};
    __builtin_memcpy(value.backend, path->backend, 16);
    check_replies.update(&key, &value);
    __u32 daddr = ETH_HLEN + (p.family == 4 ? offsetof(struct iphdr, daddr) : offsetof(struct ipv6hdr, daddr));
    if (rewrite(skb, &p, daddr, p.daddr, path->vip) || (path->mode != PATH_L2 && encapsulate(skb, path))) {
        stats->refused++;
        return TC_ACT_SHOT;
    }
    stats->sent++;
    if (path->mode != PATH_L2)
        stats->tunnelled++;
    return TC_ACT_OK;
}

int check_path_ingress(struct __sk_buff *skb)
{
    struct parsed p = {};
    if (parse(skb, &p))
        return TC_ACT_OK;
    struct reply_key key = {.vip_port = p.sport, .local_port = p.dport, .family = p.family, .proto = p.proto};
    __builtin_memcpy(key.vip, p.saddr, 16);
    __builtin_memcpy(key.local, p.daddr, 16);
    struct reply_value *value = check_replies.lookup(&key);
    if (!value)
        return TC_ACT_OK;
    __u8 backend[16];
    __builtin_memcpy(backend, value->backend, 16);
    __u32 saddr = ETH_HLEN + (p.family == 4 ? offsetof(struct iphdr, saddr) : offsetof(struct ipv6hdr, saddr));
    if (rewrite(skb, &p, saddr, p.saddr, backend))
        return TC_ACT_SHOT;        /* half rewritten: the socket would not take it anyway */
    __u32 zero = 0;
    struct check_path_stats *stats = check_path_stats.lookup(&zero);
    if (stats)
        stats->replies++;
    return TC_ACT_OK;
}
