/* xdplb data plane: map layouts, flags and counter slots. This header is the one ABI source: the Python side
 * reads every key and value layout from it through bcc (table.Key / table.Leaf), and tests check the constants
 * that Python also needs (bpf/_abi.py reads its #defines). Every size is overridable with -D at load time.
 */
#ifndef XDPLB_H
#define XDPLB_H

/* The ABI: the layouts of the maps and what their fields and counter slots mean. Raise it with any change to them.
 * A run takes an earlier run's state over (counters, flow table) only from a program of the same ABI (its `abi`
 * map); from another one it swaps in with fresh maps (bpf/README.md, "Restarts"). */
#define XDPLB_ABI 1

#ifndef MAX_SERVICES
#define MAX_SERVICES 4096          /* (VIP, port, proto) entries per family; also rows of service_stats */
#endif
#ifndef MAX_BACKENDS
#define MAX_BACKENDS 16384         /* backend slots: one per (service, real server) pair */
#endif
#ifndef MAX_TABLES
#define MAX_TABLES 8192            /* Maglev table ids: two per service (the live one, and the one it replaced) */
#endif
#ifndef FLOW_SETS
#define FLOW_SETS 16384            /* flow-table sets per family, a power of two; entries = FLOW_SETS * FLOW_WAYS */
#endif
#define FLOW_WAYS 4                /* entries per set: a flow may live in any of its set's ways */
#ifndef FLOW_SEED
#define FLOW_SEED 0                /* flow-table index hash seed; the loader picks a random one */
#endif
#ifndef NEW_FLOW_RATE_LIMIT
#define NEW_FLOW_RATE_LIMIT 125000 /* flow-table inserts per CPU per second before the flood guard bypasses them */
#endif
#ifndef HASH_SEED
#define HASH_SEED 0                /* the same on every node, so every node picks the same backend for a flow */
#endif
#ifndef MAX_IFINDEX
#define MAX_IFINDEX 4096           /* interfaces and tx_ports size: ingress ifindexes above it use the frame's dst
                                    * MAC; backends on an egress ifindex above it are refused by the loader */
#endif
#define MAX_IPV6_EXT_HEADERS 4     /* extension headers walked before giving up (the packet is passed) */
#define FLOW_ACTIVE_UNITS 60       /* an entry seen within this many ~1.07 s units is an active flow (~64 s) */
#ifndef ANSWER_PING
#define ANSWER_PING 1              /* answer ICMP/ICMPv6 echo requests to a VIP address in XDP */
#endif
#define PING_REPLY_TTL 64          /* TTL / hop limit of an echo reply */

/* service.flags */
#define SERVICE_STICKY 1           /* select on (saddr, daddr) only: every flow of a client goes to one backend */

/* backend.flags */
#define BACKEND_USABLE 1           /* MAC known (or tunnelled) and not removed: flows may go here (draining too) */
#define BACKEND_IPIP 2             /* tunnelled: IP in IP to its address (4in4, 6in6, 4in6, 6in4), next hop by FIB */
#define BACKEND_GUE 4              /* tunnelled: IP in UDP (GUE variant 1: the inner packet right after UDP) */
#define BACKEND_TUNNEL (BACKEND_IPIP | BACKEND_GUE)

/* A service: the Maglev table of one (VIP, port, protocol). */
struct service_key_v4 {
    __be32 addr;
    __be16 port;
    __u8 proto;                    /* IPPROTO_TCP or IPPROTO_UDP */
    __u8 pad;
};

struct service_key_v6 {
    __u8 addr[16];
    __be16 port;
    __u8 proto;
    __u8 pad;
};

struct service {
    __u32 id;                      /* row in service_stats */
    __u32 flags;                   /* SERVICE_* */
    __u32 table_id;                /* row of maglev_tables holding this service's Maglev table */
    __u32 table_size;              /* prime; 0 when no backend takes new flows (established ones continue) */
};

/* Where a flow goes: the L2 next hop of one real server for one service. */
struct backend {
    __u8 mac[6];                   /* destination MAC written into forwarded frames */
    __u16 vlan;                    /* VLAN ID to forward on; 0 keeps the frame's own tag (or none) */
    __u32 generation;              /* changes when the slot is removed or reused: stale flows re-select */
    __u32 flags;                   /* BACKEND_* */
    __u32 service_id;              /* row in service_stats of the service this slot belongs to */
    __u32 ifindex;                 /* egress interface: 0 or the ingress one is XDP_TX, another one XDP_REDIRECT
                                    * through tx_ports (its source MAC from interfaces) */
};

/* A tunnelled backend's own address, the outer destination (tunnel_dests, by slot; read for tunnels only). */
struct tunnel_dest {
    __u8 addr[16];                 /* an IPv4 address in the first 4 bytes */
    __u8 family;                   /* 4 or 6 */
    __u8 pad[3];
};

/* A tunnelled backend's next hop as the FIB gave it, cached per CPU by slot (next_hops): a FIB lookup costs more
 * than the rest of the tunnel path, so it runs again only after NEXT_HOP_TTL_NS or when the slot's generation
 * changed. Failures are not cached. */
struct next_hop {
    __u64 at_ns;                   /* coarse clock of the lookup; 0: never looked up */
    __u32 generation;              /* backends[slot].generation it was looked up for */
    __u32 ifindex;                 /* egress interface */
    __u8 dmac[6];
    __u8 smac[6];
    __u16 mtu;                     /* of the route: a tunnelled frame over it is dropped (drop_too_big) */
    __u8 pad[2];
};
#define NEXT_HOP_TTL_NS 1000000000ULL  /* routes and neighbours are followed within a second */

/* The node's tunnel settings: one entry of tunnel_config. */
struct tunnel_config {
    __be32 source_v4;              /* outer source of IPv4 tunnels (0: none; the loader refuses such backends) */
    __u8 source_v6[16];            /* outer source of IPv6 tunnels */
    __be16 gue_port;               /* outer UDP destination port of GUE */
    __u8 pad[2];
};

/* The flow table: which backend an established flow sticks to. Keys are the 5-tuple in network order, 8-byte
 * aligned (their sizes are multiples of 8 already, so no layout moves): keys_equal compares them as __u64 words. */
struct __attribute__((aligned(8))) flow_key_v4 {
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 pad[3];
};

struct __attribute__((aligned(8))) flow_key_v6 {
    __u8 saddr[16];
    __u8 daddr[16];
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 pad[3];
};

struct flow {
    __u32 backend;                 /* slot in backends */
    __u32 generation;              /* backends[slot].generation when the flow was placed */
};

/* One flow-table entry (32 bytes for IPv4, 56 for IPv6) and one set of FLOW_WAYS of them. */
struct flow_entry_v4 {
    struct flow_key_v4 key;
    struct flow flow;
    __u32 seen;                    /* coarse clock, ~1.07 s units: the least recently seen entry is replaced */
    __u32 check;                   /* flow_check(key hash, flow): anything else reads as an empty entry */
};

struct flow_set_v4 {
    struct flow_entry_v4 way[FLOW_WAYS];
};

struct flow_entry_v6 {
    struct flow_key_v6 key;
    struct flow flow;
    __u32 seen;
    __u32 check;
};

struct flow_set_v6 {
    struct flow_entry_v6 way[FLOW_WAYS];
};

/* Source MAC for forwarded frames, by the ifindex they leave through (the ingress one for XDP_TX). */
struct interface {
    __u8 mac[6];
    __u8 known;                    /* 1 once set; an all-zero entry is an interface we do not know */
    __u8 pad;
};

/* Per-CPU counters, summed by Python. */
struct global_stats {
    __u64 rx_packets;              /* every frame the program saw */
    __u64 passed;                  /* XDP_PASS: not for a configured VIP:port:proto, or unparsable */
    __u64 forwarded;               /* XDP_TX to a backend */
    __u64 forwarded_bytes;
    __u64 flow_hits;               /* flow table lookups that found a usable backend */
    __u64 flow_misses;             /* selected by Maglev */
    __u64 flow_inserts;
    __u64 flow_evictions;          /* inserts that replaced another flow's entry active within FLOW_ACTIVE_UNITS */
    __u64 flood_guard_skips;       /* inserts skipped above NEW_FLOW_RATE_LIMIT */
    __u64 drop_no_backend;         /* VIP:port:proto with no usable backend for the flow */
    __u64 drop_malformed;          /* for a VIP address, but headers truncated or inconsistent */
    __u64 drop_fragment;           /* IP fragment for a VIP address */
    __u64 drop_vlan_push;          /* no headroom to push the backend's VLAN tag */
    __u64 drop_no_source_mac;      /* ingress interface MAC unknown and the frame's destination not unicast */
    __u64 icmp_too_big_forwarded;  /* ICMP frag-needed / ICMPv6 packet-too-big sent to the flow's backend */
    __u64 icmp_echo_replies;       /* echo requests to a VIP address answered in XDP (ANSWER_PING) */
    __u64 redirected;              /* forwarded out of another interface than the ingress one (XDP_REDIRECT) */
    __u64 drop_no_egress;          /* backend's interface not in tx_ports (detached): the frame is dropped */
    __u64 tunnelled;               /* forwarded in a tunnel (IPIP or GUE) */
    __u64 drop_no_route;           /* tunnel: the FIB has no route or neighbour, or forwarding is off */
    __u64 drop_too_big;            /* tunnel: the encapsulated frame is over the egress MTU */
    __u64 drop_no_headroom;        /* tunnel: no headroom for the outer headers */
    __u64 icmp_too_big_sent;       /* tunnel: over the MTU, told to the client (frag needed / packet too big) */
};

struct service_stats {
    __u64 packets;
    __u64 bytes;
    __u64 new_flows;               /* TCP SYNs and UDP flow-table misses */
    __u64 drop_no_backend;
};

struct backend_stats {
    __u64 packets;
    __u64 bytes;
    __u64 new_flows;
};

/* Per-CPU cache of the coarse clock. That clock moves only at a tick, as jiffies does, so reading it again only
 * when bpf_jiffies64() (a plain load) has moved gives what a read per packet would, late by a tick at most (jiffies
 * moves just before the clock does), at a fraction of the cost: the coarse clock helper was 14 ns of an 85 ns
 * established flow on these VMs. Its users count in ~1 s units. */
struct clock_cache {
    __u64 jiffies;                 /* bpf_jiffies64() when coarse_ns was read */
    __u64 coarse_ns;               /* bpf_ktime_get_coarse_ns() then */
};

/* Per-CPU state of the flood guard: inserts in the current one-second window. */
struct flood_guard {
    __u64 window_start_ns;
    __u64 inserts;
};

#endif
