// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * route: itmBench's itmRoute, overlay routing in the kernel. One load puts it at both tc hooks of a
 * device, as two instances that share these maps:
 *
 *  - at tc-egress, a packet for a destination of the overlay (route_dests) is encapsulated in
 *    IPv4 + UDP + struct route_hdr and sent to the next hop the control plane chose for its
 *    destination node (route_best): the node itself, or a neighbour that relays it;
 *  - at tc-ingress, a tunnel packet (UDP to the overlay port) is checked before anything else:
 *    the outer source is a peer's address, the header names that peer and its key, the tag is
 *    right, the sequence number is not replayed. Then the packet is decapsulated (it is for this
 *    node), relayed on to its destination node with this node's own header (it is for another),
 *    or, a probe or probe answer for this node, handed to the control plane's socket.
 *
 * The tag is SipHash-2-4, keyed per pair of nodes, over the overlay header (tag zeroed) and the
 * whole inner packet but its L4 checksum (which offloads may fill in after the tag). Outer IPv4
 * and UDP are not covered, so the overlay crosses NATs. TCP SYNs get their MSS clamped to what
 * fits the tunnel; other packets too big for it are dropped and counted (too_big). Every packet
 * route sees is one packet on the wire: the dispatcher cuts GSO super-packets into their
 * segments first (the module is perSegment), so each segment has its own sequence number and tag.
 */
#define ITM_TC_ONLY
#include <itm/itm.h>

/* what the TypeScript side shares (enums, not #defines, so that they reach BTF and route.abi.ts) */
enum route_limits {
	ROUTE_VERSION = 2,	      /* 2: the NH-SipHash tag; 1 had SipHash over the whole packet */
	ROUTE_HDR_LEN = 32,	      /* sizeof(struct route_hdr) */
	ROUTE_OVERHEAD = 20 + 8 + 32, /* outer IPv4, UDP, struct route_hdr */
	ROUTE_MAX_BYTES = 2048,	      /* the most the tag covers: the overlay header and 2,016 bytes */
	ROUTE_MAX_INNER = 2048 - 32,
	ROUTE_NH_WORDS = (2048 - 32) / 4 + 4, /* NH's key: a word per word, and the Toeplitz shift */
	/* replay slots per stream (see replay_ok): how far out of order a packet may come. Segments
	 * of super-packets come in bursts of up to 44, taken on two CPUs at once: 64 were too few */
	ROUTE_WINDOW = 1024,
	ROUTE_MAX_PEERS = 256,
};
#define AF_INET 2

enum route_type {
	ROUTE_DATA = 1,
	ROUTE_PROBE = 2,
	ROUTE_ACK = 3,
};

enum route_flags {
	ROUTE_F_CTL = 1, /* the sequence number is the control plane's, not the kernel's */
};

/* on the wire after outer IPv4 + UDP; integers big-endian */
struct route_hdr {
	__u8 version;
	__u8 type;    /* enum route_type */
	__u8 flags;   /* enum route_flags */
	__u8 key_id;  /* which key of the pair tags it */
	__u32 from;   /* the node that sent this hop (its key with the receiver tags it) */
	__u32 origin; /* the node that first sent it */
	__u32 to;     /* the node it is for */
	__u64 seq;    /* per (from, receiver, flags & CTL), never repeated */
	__u8 tag[8];  /* see route_tag */
};

_Static_assert(sizeof(struct route_hdr) == ROUTE_HDR_LEN, "ROUTE_HDR_LEN is the header's size");

/* a pair's tag keys, derived from its 16-byte key (modules/route/tag.ts), at its slot */
struct route_key {
	__u8 prf[16];		  /* SipHash-2-4's, for the last step */
	__u32 nh[ROUTE_NH_WORDS]; /* NH's */
};

/* where route_tag copies the inner packet, zero-padded */
struct route_scratch {
	__u8 buf[ROUTE_MAX_INNER + 8];
};

/* a neighbour (any node this one shares a key with), by its wire id; its keys are in route_keys */
struct route_peer {
	__u32 addr; /* where tunnel packets to it go (network order) */
	__u32 key_id;
	/* the underlay route to addr, kept up to date by the control plane (0: none): the kernel's
	 * FIB helper refuses devices that do not forward, and a host need not forward to tunnel */
	__u32 ifindex;
	__u32 src;  /* the source address that route uses (network order) */
	__u32 mtu;  /* of that device */
	__u32 slot; /* its index in route_tx and route_keys, and (x 2) in route_rx */
	/* that route's next hop (network order): its gateway, or addr itself on a link to it. Given to
	 * bpf_redirect_neigh, which then looks up no route of its own per packet (0: it does) */
	__u32 gw;
};

/* The replay state of what one peer sends (one sequence space): the highest sequence number
 * accepted in each residue class mod ROUTE_WINDOW. A number is accepted when it raises its slot,
 * so none is ever accepted twice, and no lock is needed: the kernel and the user data path's
 * hosts (which map this memory) raise a slot by compare-and-swap. */
struct route_window {
	__u64 slot[ROUTE_WINDOW];
};

struct route_lpm {
	__u32 prefixlen; /* 96 + len for IPv4 (stored IPv4-mapped) */
	__u8 addr[16];
};

/* per-path figures of the control plane, for `itmctl route paths`: key (destination node, via
 * node: 0 for the direct path) */
struct route_path_key {
	__u32 dest;
	__u32 via;
};

struct route_path {
	__u32 rtt_us;  /* smoothed round-trip time of its probes */
	__u32 loss_pm; /* probes lost, per mille, smoothed */
	__u32 sent;
	__u32 answered;
	__u64 last_answer_ns; /* CLOCK_MONOTONIC */
	__u8 alive;
	__u8 in_use;
	__u8 pad[6];
};

/* what the data path did, and why it dropped what it dropped */
struct route_stats {
	__u64 encapsulated;
	__u64 decapsulated;
	__u64 relayed;
	__u64 to_control; /* probes and answers for this node, handed to the control plane */
	__u64 mss_clamped;
	__u64 no_path;	/* a destination without a next hop yet: the packet went on unchanged */
	__u64 no_route; /* no underlay route to the next hop: dropped */
	__u64 too_big;	/* would not fit the tunnel's MTU: dropped */
	__u64 gso;	/* a GSO packet cannot be tagged per segment: dropped */
	__u64 not_peer; /* outer source is not the address of the peer the header names */
	__u64 bad_key;	/* unknown key id */
	__u64 bad_tag;
	__u64 replayed;
	__u64 truncated;
	__u64 bad_version;
	__u64 bad_hops; /* relayed already, or for a node that is not a neighbour */
	__u64 errors;	/* a helper failed */
};

/* set by itmctl from the topology */
const volatile __u32 route_me = 0;   /* this node's wire id */
const volatile __u16 route_port = 0; /* the overlay's UDP port */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct route_peer);
} route_peers SEC(".maps");

/* every address a peer's tunnel packets may come from → the peer */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} route_addrs SEC(".maps");

/* destination prefixes → the node that serves them */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_lpm);
	__type(value, __u32);
} route_dests SEC(".maps");

/* destination node → next hop (the node itself for the direct path), chosen by the probes */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} route_best SEC(".maps");

/* the last sequence number this node sent each peer, by its slot; mmapable: the user data path
 * takes numbers from the same counters, by atomic add */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ROUTE_MAX_PEERS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} route_tx SEC(".maps");

/* the tag keys of each pair, by the peer's slot */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ROUTE_MAX_PEERS);
	__type(key, __u32);
	__type(value, struct route_key);
} route_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct route_scratch);
} route_scratch SEC(".maps");

/* the replay windows of what each peer sends, at its slot * 2 + ctl; mmapable, as route_tx */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * ROUTE_MAX_PEERS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct route_window);
} route_rx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct route_path_key);
	__type(value, struct route_path);
} route_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct route_stats);
} route_stats SEC(".maps");

/* what the user data path (--datapath user) counts, in the same fields: its hosts add to them
 * atomically in this memory, which they map */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct route_stats);
} route_ustats SEC(".maps");

/* the structures TypeScript reads and writes (modules/route/route.abi.ts is generated from them) */
const volatile struct route_abi {
	struct route_hdr h;
	struct route_peer p;
	struct route_window w;
	struct route_lpm l;
	struct route_path_key pk;
	struct route_path pv;
	struct route_stats s;
	struct route_key k;
	enum route_limits limits;
	enum route_type type;
	enum route_flags flags;
} route_abi_anchor;

#define COUNT(field)                                                                                         \
	do {                                                                                                 \
		__u32 z = 0;                                                                                 \
		struct route_stats *st = bpf_map_lookup_elem(&route_stats, &z);                              \
		if (st)                                                                                      \
			st->field++;                                                                         \
	} while (0)

/* ---- the tag -------------------------------------------------------------------------------
 *
 * Hash, then PRF (as UMAC and Poly1305-AES are built): NH, UMAC's universal hash (RFC 4418
 * §5.2.2), twice with its Toeplitz shift of four words, over the inner packet; then SipHash-2-4
 * of the header's first 24 bytes (sequence number included), the inner length and the two NH
 * sums. NH costs two multiplications and four additions per 8 bytes where SipHash costs eight
 * rounds of add-rotate-xor, and BPF has no rotate: about three times less per segment, and a
 * tag is made or checked once per segment at every hop. A forgery needs a fresh sequence number
 * (the replay window refuses a seen one), so the PRF's input is new and its output a guess
 * (2^-64), or a seen one with the same NH sums as the packet that number was made for (2^-64 for
 * two passes of NH, whose key the PRF's output does not reveal). The keys come from the pair's
 * 16-byte key (route_keys, written by the control plane; modules/route/tag.ts derives them).
 */

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                             \
	do {                                                                                                 \
		v0 += v1;                                                                                    \
		v1 = ROTL(v1, 13);                                                                           \
		v1 ^= v0;                                                                                    \
		v0 = ROTL(v0, 32);                                                                           \
		v2 += v3;                                                                                    \
		v3 = ROTL(v3, 16);                                                                           \
		v3 ^= v2;                                                                                    \
		v0 += v3;                                                                                    \
		v3 = ROTL(v3, 21);                                                                           \
		v3 ^= v0;                                                                                    \
		v2 += v1;                                                                                    \
		v1 = ROTL(v1, 17);                                                                           \
		v1 ^= v2;                                                                                    \
		v2 = ROTL(v2, 32);                                                                           \
	} while (0)
#define SIP_WORD(m)                                                                                          \
	do {                                                                                                 \
		v3 ^= (m);                                                                                   \
		SIPROUND;                                                                                    \
		SIPROUND;                                                                                    \
		v0 ^= (m);                                                                                   \
	} while (0)

/* NH's two sums of the inner packet under one key, and its length */
struct route_nh {
	__u64 s1;
	__u64 s2;
};

/*
 * NH's two passes over `words` 8-byte words at `d` (zero-padded, little-endian 32-bit halves)
 * under the key words at `k`, the second pass with its Toeplitz shift of four words: per word,
 * (m0 + k0) * (m1 + k1), the additions mod 2^32 and the product in 64 bits, summed mod 2^64.
 * A function of its own (not inlined into the module's entry, whose live values would take the
 * registers and spill the sums to the stack every step): its 10 registers hold the two pointers,
 * the count, the sums and a word's halves, with no stack access in the loop. The halves are read
 * with 32-bit loads, so each addition is one ALU32 instruction and no shift splits a word.
 */
static __noinline void route_nh_pass(const __u32 *d, const __u32 *k, __u32 words, struct route_nh *out)
{
	__u64 s1 = 0, s2 = 0;
	__u32 pairs;

	/* the last word first when their number is odd (a sum's order is free), then 16 bytes a step
	 * (fewer loop instructions per byte) */
	asm volatile("" : "+r"(words)); /* keeps the check below, which the verifier needs */
	if (words > ROUTE_MAX_INNER / 8)
		return;
	pairs = words >> 1;
	if (words & 1) {
		__u32 last = words - 1;
		const __u32 *dl, *kl;

		asm volatile("" : "+r"(last));
		if (last >= ROUTE_MAX_INNER / 8)
			return;
		dl = d + 2 * last;
		kl = k + 2 * last;
		s1 = (__u64)(__u32)(dl[0] + kl[0]) * (__u32)(dl[1] + kl[1]);
		s2 = (__u64)(__u32)(dl[0] + kl[4]) * (__u32)(dl[1] + kl[5]);
	}
	for (; pairs; pairs--) {
		__u32 m0, m1;

		m0 = d[0];
		m1 = d[1];
		s1 += (__u64)(__u32)(m0 + k[0]) * (__u32)(m1 + k[1]);
		s2 += (__u64)(__u32)(m0 + k[4]) * (__u32)(m1 + k[5]);
		asm volatile("" ::: "memory"); /* a word at a time: hoisting the next word's loads spills */
		m0 = d[2];
		m1 = d[3];
		s1 += (__u64)(__u32)(m0 + k[2]) * (__u32)(m1 + k[3]);
		s2 += (__u64)(__u32)(m0 + k[6]) * (__u32)(m1 + k[7]);
		d += 4;
		k += 4;
	}
	out->s1 = s1;
	out->s2 = s2;
}

/* where the inner packet's L4 checksum is in its first bytes `ip` (`n` of them), from the start
 * of the overlay header; ~0 for none (datapath.ts's innerCsum) */
static __always_inline __u32 inner_csum(const __u8 *ip, __u32 n)
{
	if (n < 10 || (ip[0] >> 4) != 4 || (((__u16)ip[6] << 8 | ip[7]) & 0x1fff))
		return ~0U;
	if (ip[9] == IPPROTO_TCP)
		return ROUTE_HDR_LEN + (ip[0] & 0xf) * 4 + 16;
	if (ip[9] == IPPROTO_UDP)
		return ROUTE_HDR_LEN + (ip[0] & 0xf) * 4 + 6;
	return ~0U;
}

/*
 * NH of the inner packet after the overlay header at `hoff` (to the packet's end; its length in
 * `*len`), a data packet's inner L4 checksum read as zero (offloads may fill it in after the tag;
 * probes have none): under `ka` into `a`, and when `two` under `kb` into `b` as well (a relay
 * checks a packet under one key and tags it under another: one copy of the packet, two passes
 * over it). 0 on success.
 */
static __always_inline int route_nh(struct __sk_buff *skb, __u32 hoff, int data, const struct route_key *ka,
				    const struct route_key *kb, struct route_nh *a, struct route_nh *b,
				    __u32 *len, const int two)
{
	__u32 zero = 0, n, csum;
	struct route_scratch *sc = bpf_map_lookup_elem(&route_scratch, &zero);

	if (!sc || hoff + ROUTE_HDR_LEN > skb->len)
		return -1;
	n = skb->len - hoff - ROUTE_HDR_LEN;
	if (n > ROUTE_MAX_INNER)
		return -1;
	/* the inner bytes, in one copy, zero-padded to whole 8-byte words */
	if (n && bpf_skb_load_bytes(skb, hoff + ROUTE_HDR_LEN, sc->buf, n))
		return -1;
	*(__u64 *)(sc->buf + n) = 0;
	/* the checksum's place, from the copy's inner IPv4 header (no load of its own) */
	csum = data ? inner_csum(sc->buf, n) : ~0U;
	if (csum >= ROUTE_HDR_LEN && csum - ROUTE_HDR_LEN + 2 <= n && csum - ROUTE_HDR_LEN < ROUTE_MAX_INNER)
		*(__u16 *)(sc->buf + (csum - ROUTE_HDR_LEN)) = 0;
	route_nh_pass((const __u32 *)sc->buf, ka->nh, (n + 7) >> 3, a);
	if (two)
		route_nh_pass((const __u32 *)sc->buf, kb->nh, (n + 7) >> 3, b);
	*len = n;
	return 0;
}

/* the tag: SipHash-2-4 under `key` of the header's first 24 bytes (`hw`, as on the wire), the inner
 * length and its NH sums, 48 bytes as little-endian words */
static __noinline __u64 route_prf(const struct route_key *key, const __u64 *hw, __u32 n,
				  const struct route_nh *nh)
{
	__u64 k0 = *(const __u64 *)key->prf, k1 = *(const __u64 *)(key->prf + 8);
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;

	SIP_WORD(hw[0]);
	SIP_WORD(hw[1]);
	SIP_WORD(hw[2]);
	SIP_WORD((__u64)n);
	SIP_WORD(nh->s1);
	SIP_WORD(nh->s2);
	SIP_WORD(48ULL << 56);
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the pieces of encapsulation ------------------------------------------------------------ */

static __always_inline __u16 ip_csum(const __u16 *h)
{
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		s += h[i];
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/* Writes the outer IPv4 + UDP + overlay header at `l3` (the room is there), tagged, and sends the
 * packet to the peer the header is for. `pre`: the inner packet's NH under this peer's key, when
 * the caller has it (a relay, which computes it with its check). */
static __always_inline int send_tunnel(struct __sk_buff *skb, __u32 l3, const struct route_peer *peer,
				       struct route_hdr *h, __u8 tos, __u16 sport, const struct route_nh *pre)
{
	/* packed: the overlay header follows UDP at byte 28, where its 8-byte alignment would not */
	struct {
		struct iphdr ip;
		struct udphdr udp;
		struct route_hdr h;
	} __attribute__((packed)) o = {};
	struct iphdr ip = {};
	_Static_assert(sizeof(o) == 28 + ROUTE_HDR_LEN, "outer headers and the overlay header, back to back");
	__u32 slot = peer->slot;
	__u64 *seqp = bpf_map_lookup_elem(&route_tx, &slot), tag;
	struct route_key *key = bpf_map_lookup_elem(&route_keys, &slot);
	__u32 len = skb->len - l3, n;
	struct route_nh nh;

	if (!seqp || !key)
		return -1;
	h->seq = bpf_cpu_to_be64(__sync_fetch_and_add(seqp, 1) + 1);
	h->key_id = peer->key_id;
	h->from = bpf_htonl(route_me);
	if (pre) {
		nh = *pre;
		n = len - 28 - ROUTE_HDR_LEN;
	} else if (route_nh(skb, l3 + 28, 1, key, key, &nh, &nh, &n, 0)) {
		return -1;
	}
	tag = route_prf(key, (const __u64 *)h, n, &nh);
	__builtin_memcpy(h->tag, &tag, sizeof(tag));
	ip.version = 4;
	ip.ihl = 5;
	ip.tos = tos;
	ip.tot_len = bpf_htons(len);
	ip.ttl = 64;
	ip.protocol = IPPROTO_UDP;
	ip.saddr = peer->src;
	ip.daddr = peer->addr;
	ip.check = ip_csum((const __u16 *)&ip);
	o.ip = ip;
	o.udp.source = bpf_htons(sport | 0xc000);
	o.udp.dest = bpf_htons(route_port);
	o.udp.len = bpf_htons(len - 20);
	o.h = *h;
	if (bpf_skb_store_bytes(skb, l3, &o, sizeof(o), 0))
		return -1;
	/* the neighbour subsystem resolves the next hop's address (if it must) and sends it there */
	if (peer->gw) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET, .ipv4_nh = peer->gw};

		return bpf_redirect_neigh(peer->ifindex, &nh, sizeof(nh), 0);
	}
	return bpf_redirect_neigh(peer->ifindex, NULL, 0, 0);
}

/* Lowers the MSS option of a TCP SYN to `mss` if it is above. */
static __always_inline void clamp_mss(struct itm_ctx *c, __u16 mss)
{
	struct __sk_buff *skb = c->ctx;
	__u32 off = c->pkt->l4_off, end;
	__u8 doff;

	if (bpf_skb_load_bytes(skb, off + 12, &doff, 1))
		return;
	end = off + (doff >> 4) * 4;
	off += 20;
#pragma unroll
	for (int i = 0; i < 12; i++) {
		__u8 opt[4];

		if (off + 1 > end || bpf_skb_load_bytes(skb, off, opt, 1) || opt[0] == 0)
			return;
		if (opt[0] == 1) {
			off++;
			continue;
		}
		if (off + 4 > end || bpf_skb_load_bytes(skb, off, opt, 4) || opt[1] < 2)
			return;
		if (opt[0] == 2 && opt[1] == 4) {
			__u16 old = (__u16)opt[2] << 8 | opt[3];

			if (old > mss) {
				__u16 o = bpf_htons(old), n = bpf_htons(mss);

				bpf_skb_store_bytes(skb, off + 2, &n, 2, 0);
				bpf_l4_csum_replace(skb, c->pkt->l4_off + 16, o, n, 2);
				COUNT(mss_clamped);
			}
			return;
		}
		off += opt[1];
	}
}

/* ---- tc-egress: into the tunnel ------------------------------------------------------------- */

static __always_inline int encapsulate(struct itm_ctx *c)
{
	struct __sk_buff *skb = c->ctx;
	struct itm_pkt *p = c->pkt;
	struct route_lpm k = {.prefixlen = 128};
	struct route_hdr h = {.version = ROUTE_VERSION, .type = ROUTE_DATA};
	struct route_peer *peer;
	__u32 *dest, *next, d, n;

	if (p->flow.family != 4)
		return ITM_ACCEPT; /* the inner packet is IPv4 (the tries of route_dests are IPv4-mapped) */
	if (p->flow.proto == IPPROTO_UDP && p->flow.dport == route_port)
		return ITM_ACCEPT; /* already a tunnel packet (a probe, a relayed packet) */
	__builtin_memcpy(k.addr, p->flow.daddr, 16);
	dest = bpf_map_lookup_elem(&route_dests, &k);
	if (!dest || *dest == route_me)
		return ITM_ACCEPT;
	d = *dest;
	next = bpf_map_lookup_elem(&route_best, &d);
	if (!next) {
		COUNT(no_path);
		return ITM_ACCEPT;
	}
	n = *next;
	peer = bpf_map_lookup_elem(&route_peers, &n);
	if (!peer) {
		COUNT(no_path);
		return ITM_ACCEPT;
	}
	/* the dispatcher cuts super-packets into their segments before they reach route (perSegment
	 * in module.ts): one that comes whole had no segmentation pair to go through (counted in
	 * itmctl list as seg_unavailable) and cannot be tagged per segment */
	if (skb->gso_segs > 1) {
		COUNT(gso);
		return ITM_DROP;
	}
	if (!peer->ifindex) {
		COUNT(no_route);
		return ITM_DROP;
	}
	if (p->flow.proto == IPPROTO_TCP && (p->tcp_flags & 0x02) && peer->mtu > ROUTE_OVERHEAD + 40)
		clamp_mss(c, peer->mtu - ROUTE_OVERHEAD - 40);
	if (skb->len - p->l3_off + ROUTE_OVERHEAD > peer->mtu) {
		COUNT(too_big);
		return ITM_DROP;
	}
	/* no BPF_F_ADJ_ROOM_ENCAP_* flags: they serve GSO of the inner packet, which route does not
	 * send, and they mark the skb as encapsulated, which stays with it across a veth and keeps the
	 * next node from growing it (bpf_skb_change_tail refuses such an skb, and so a user data path
	 * there could not take it). A checksum left for offload stays right: csum_start moves with
	 * the inner header. */
	if (bpf_skb_adjust_room(skb, ROUTE_OVERHEAD, BPF_ADJ_ROOM_MAC, 0)) {
		COUNT(errors);
		return ITM_DROP;
	}
	h.origin = bpf_htonl(route_me);
	h.to = bpf_htonl(d);
	/* the inner DSCP and ECN go on the outer header, so marking survives the overlay */
	if (send_tunnel(skb, p->l3_off, peer, &h, (p->dscp << 2) | p->ecn,
			(__u16)(bpf_get_hash_recalc(skb) & 0x3fff), NULL) != TC_ACT_REDIRECT) {
		COUNT(errors);
		return ITM_DROP;
	}
	COUNT(encapsulated);
	return ITM_REDIRECT;
}

/* ---- tc-ingress: out of the tunnel ---------------------------------------------------------- */

/* whether `seq` from the peer at `slot` is new: it raises its window slot (see struct route_window) */
static __always_inline int replay_ok(__u32 slot, int ctl, __u64 seq)
{
	__u32 key = slot * 2 + (ctl ? 1 : 0);
	struct route_window *w = bpf_map_lookup_elem(&route_rx, &key);
	__u64 *s, old;

	if (!w || !seq)
		return 0;
	s = &w->slot[seq & (ROUTE_WINDOW - 1)];
	/* a lost race means another packet raised the slot meanwhile: look again, a few times */
	for (int i = 0; i < 4; i++) {
		old = *(volatile __u64 *)s;
		if (old >= seq)
			return 0;
		if (__sync_val_compare_and_swap(s, old, seq) == old)
			return 1;
	}
	return 0;
}

static __always_inline int decapsulate(struct itm_ctx *c)
{
	struct __sk_buff *skb = c->ctx;
	struct itm_pkt *p = c->pkt;
	__u32 hoff = p->payload_off, l3 = p->l3_off, saddr, from, *owner, to, n;
	struct route_peer *peer, *np;
	struct route_key *key, *nkey;
	struct route_nh in, out;
	struct route_hdr h;
	__u64 tag, want;
	__u8 tos;
	int data;

	if (p->flow.family != 4 || !(p->flags & ITM_PKT_PORTS) || p->flow.dport != route_port)
		return ITM_ACCEPT;
	if (bpf_skb_load_bytes(skb, hoff, &h, sizeof(h))) {
		COUNT(truncated);
		return ITM_DROP;
	}
	if (h.version != ROUTE_VERSION || h.type < ROUTE_DATA || h.type > ROUTE_ACK) {
		COUNT(bad_version);
		return ITM_DROP;
	}
	if (h.type == ROUTE_DATA && skb->len < hoff + 32 + 20) {
		COUNT(truncated);
		return ITM_DROP;
	}
	/* the outer source is the address of the peer the header names */
	__builtin_memcpy(&saddr, p->flow.saddr + 12, 4);
	from = bpf_ntohl(h.from);
	owner = bpf_map_lookup_elem(&route_addrs, &saddr);
	peer = bpf_map_lookup_elem(&route_peers, &from);
	if (!owner || *owner != from || !peer) {
		COUNT(not_peer);
		return ITM_DROP;
	}
	if (h.key_id != peer->key_id) {
		COUNT(bad_key);
		return ITM_DROP;
	}
	__builtin_memcpy(&want, h.tag, 8);
	/* a data packet's inner L4 checksum is left out of the tag; probes have none */
	data = h.type == ROUTE_DATA;
	key = bpf_map_lookup_elem(&route_keys, &peer->slot);
	/* a packet to relay: NH under the next hop's key too, in the same pass */
	to = bpf_ntohl(h.to);
	np = to != route_me ? bpf_map_lookup_elem(&route_peers, &to) : NULL;
	nkey = np ? bpf_map_lookup_elem(&route_keys, &np->slot) : NULL;
	if (!key || (nkey ? route_nh(skb, hoff, data, key, nkey, &in, &out, &n, 1)
			  : route_nh(skb, hoff, data, key, key, &in, &in, &n, 0))) {
		COUNT(errors);
		return ITM_DROP;
	}
	tag = route_prf(key, (const __u64 *)&h, n, &in);
	if (tag != want) {
		COUNT(bad_tag);
		return ITM_DROP;
	}
	if (!replay_ok(peer->slot, h.flags & ROUTE_F_CTL, bpf_be64_to_cpu(h.seq))) {
		COUNT(replayed);
		return ITM_DROP;
	}

	if (to == route_me) {
		if (h.type != ROUTE_DATA) {
			COUNT(to_control);
			return ITM_ACCEPT; /* to the control plane's socket */
		}
		if (bpf_skb_adjust_room(skb, -ROUTE_OVERHEAD, BPF_ADJ_ROOM_MAC, 0)) {
			COUNT(errors);
			return ITM_DROP;
		}
		COUNT(decapsulated);
		/* again through this device's ingress, where the chain sees the inner packet: by way of
		 * the hook's GRO path, so the segments of a flow reach the stack merged */
		itm_redirect_ingress_gro(skb);
		return ITM_REDIRECT;
	}

	/* for another node: relay it there directly, once, with this node's own header */
	{
		if (h.from != h.origin || !np || to == from) {
			COUNT(bad_hops);
			return ITM_DROP;
		}
		if (!np->ifindex) {
			COUNT(no_route);
			return ITM_DROP;
		}
		tos = (p->dscp << 2) | p->ecn; /* the outer header's, as it came */
		h.flags &= ~ROUTE_F_CTL;       /* the kernel's sequence numbers from here */
		if (send_tunnel(skb, l3, np, &h, tos, p->flow.sport, nkey ? &out : NULL) != TC_ACT_REDIRECT) {
			COUNT(errors);
			return ITM_DROP;
		}
		COUNT(relayed);
		return ITM_REDIRECT;
	}
}

static __always_inline int route_process(struct itm_ctx *c, __u32 cls)
{
	return c->pkt->hook == ITM_HOOK_TC_EGRESS ? encapsulate(c) : decapsulate(c);
}

ITM_MODULE(route, itm_classify_all, itm_log_none, route_process)
