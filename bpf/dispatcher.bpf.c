// SPDX-License-Identifier: GPL-2.0
/*
 * The itm dispatcher: one instance per device and hook. It parses each packet once, then runs the
 * modules registered on its hook in chain order, each gated by its interest. Modules are separate
 * programs reached by tail calls through itm_progs; each returns here through the resume program.
 * Built twice: for tc (cls_bpf on clsact ingress and egress) and, with -DITM_XDP, for XDP.
 */
#include "itm/itm.h"

char LICENSE[] SEC("license") = "GPL";

/* set by the loader before load */
const volatile __u32 itm_hook = ITM_HOOK_TC_EGRESS;
/* for tests: parse every packet the slow way, as if its headers were not linear (the verifier
 * removes the test when it is 0) */
const volatile __u8 itm_force_slow = 0;
/* random, set by the loader: a returning packet's trailer must carry it */
const volatile __u32 itm_secret = 0;
/* the device the dispatcher serves (the XDP return program runs on another one) */
const volatile __u32 itm_dev_ifindex = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_CHAIN_VERSIONS);
	__type(key, __u32);
	__type(value, struct itm_chain);
} itm_chain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct itm_ctl);
} itm_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct itm_lpm_key);
	__type(value, __u8);
} itm_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct itm_lpm_key);
	__type(value, __u8);
} itm_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct itm_dstats);
} itm_dstats SEC(".maps");

/* user modules, by slot id (see struct itm_trailer in abi.h) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct itm_uctl);
} itm_uctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct itm_uflight);
} itm_uflight SEC(".maps");

/* the ring of what the segments of the hook's super-packets carry (see struct itm_seg; the pair
 * itself is in itm_segctl, which modules share) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_SEG_RING);
	__type(key, __u32);
	__type(value, struct itm_seg);
} itm_segs SEC(".maps");

/* keeps the ABI enums in BTF for the TypeScript generator */
const volatile struct itm_abi_consts itm_abi_anchor;

enum parse_result { PARSED, NON_IP, TRUNCATED, MALFORMED, UNSUPPORTED, SLOW };

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_ 51
#define IPPROTO_DSTOPTS_ 60
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132

/* headers must start within the first MAX_HDR_OFF bytes; later ones are passed as unsupported */
#define MAX_HDR_OFF 512

/* the packet's length now (a module may have changed it) */
static __always_inline __u32 pkt_len(itm_ctx_t *ctx)
{
#ifdef ITM_XDP
	return bpf_xdp_get_buff_len(ctx);
#else
	return ctx->len;
#endif
}

/*
 * Headers are read in place (direct packet access, about 60 ns a packet cheaper here than
 * bpf_skb_load_bytes). When one is not in the skb's linear part, the whole parse runs again in
 * `slow` mode, which copies each header out with bpf_skb_load_bytes: pulling the data linear
 * instead would copy (and often reallocate) every cloned TCP skb at egress.
 */
struct cursor {
	itm_ctx_t *ctx;
	void *data;
	void *end;
	__u32 len;	/* skb->len: tells a truncated packet from one that is merely not linear */
};

/* `size` bytes at `off`: in place (fast) or copied into `buf` (slow); `slow` is a constant */
static __always_inline int need(const struct cursor *c, __u32 off, __u32 size, void *buf, void **out,
				const int slow)
{
	if (off > MAX_HDR_OFF)
		return off > c->len ? TRUNCATED : UNSUPPORTED;
	if (slow) {
		if (itm__load_bytes(c->ctx, off, buf, size))
			return TRUNCATED;
		*out = buf;
		return PARSED;
	}
	if (c->data + off + size > c->end)
		return off + size > c->len ? TRUNCATED : SLOW;
	*out = c->data + off;
	return PARSED;
}

static __always_inline void set_v4_mapped(__u8 *dst, __be32 a)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &a, 4);
}

static __always_inline int parse_l4(const struct cursor *c, struct itm_pkt *p, __u32 off, const int slow)
{
	__u8 proto = p->flow.proto;
	int r;

	p->l4_off = off;
	if (proto == IPPROTO_TCP) {
		struct tcphdr tb, *th;

		if ((r = need(c, off, sizeof(tb), &tb, (void **)&th, slow)))
			return r;
		if (th->doff < 5)
			return MALFORMED;
		p->flow.sport = bpf_ntohs(th->source);
		p->flow.dport = bpf_ntohs(th->dest);
		p->tcp_flags = ((__u8 *)th)[13];
		p->payload_off = off + th->doff * 4;
		p->flags |= ITM_PKT_PORTS;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr ub, *uh;

		if ((r = need(c, off, sizeof(ub), &ub, (void **)&uh, slow)))
			return r;
		p->flow.sport = bpf_ntohs(uh->source);
		p->flow.dport = bpf_ntohs(uh->dest);
		p->payload_off = off + sizeof(ub);
		p->flags |= ITM_PKT_PORTS;
	} else if (proto == IPPROTO_SCTP_) {
		/* the common header: ports, verification tag, checksum */
		struct { __be16 source, dest; __u32 vtag, csum; } sb, *sh;

		if ((r = need(c, off, sizeof(sb), &sb, (void **)&sh, slow)))
			return r;
		p->flow.sport = bpf_ntohs(sh->source);
		p->flow.dport = bpf_ntohs(sh->dest);
		p->payload_off = off + sizeof(sb);
		p->flags |= ITM_PKT_PORTS;
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6_) {
		__u8 tb[2], *tc;

		if ((r = need(c, off, 2, tb, (void **)&tc, slow)))
			return r;
		p->icmp_type = tc[0];
		p->icmp_code = tc[1];
		p->payload_off = off + 4;
	} else {
		/* another protocol: the module may still match it by protocol and address */
		p->payload_off = off;
		return PARSED;
	}
	p->flags |= ITM_PKT_L4;
	return PARSED;
}

static __always_inline int parse_ipv4(const struct cursor *c, struct itm_pkt *p, __u32 off, const int slow)
{
	struct iphdr ib, *ih;
	__u8 lb, *last;
	__u32 hlen;
	int r;

	if ((r = need(c, off, sizeof(ib), &ib, (void **)&ih, slow)))
		return r;
	if (ih->version != 4 || ih->ihl < 5)
		return MALFORMED;
	hlen = ih->ihl * 4;
	p->flow.family = 4;
	p->flow.proto = ih->protocol;
	set_v4_mapped(p->flow.saddr, ih->saddr);
	set_v4_mapped(p->flow.daddr, ih->daddr);
	p->dscp = ih->tos >> 2;
	p->ecn = ih->tos & 3;
	if (bpf_ntohs(ih->frag_off) & 0x1fff)
		p->flags |= ITM_PKT_FRAGMENT;
	if (hlen > sizeof(ib)) {
		/* the options must be there too */
		if ((r = need(c, off + hlen - 1, 1, &lb, (void **)&last, slow)))
			return r;
		p->flags |= ITM_PKT_IP_OPTIONS;
	}
	if (p->flags & ITM_PKT_FRAGMENT) {
		p->l4_off = off + hlen;
		p->payload_off = off + hlen;
		return PARSED;
	}
	return parse_l4(c, p, off + hlen, slow);
}

static __always_inline int parse_ipv6(const struct cursor *c, struct itm_pkt *p, __u32 off, const int slow)
{
	struct ipv6hdr ib, *ih;
	__u8 nh;
	int r;

	if ((r = need(c, off, sizeof(ib), &ib, (void **)&ih, slow)))
		return r;
	if (ih->version != 6)
		return MALFORMED;
	p->flow.family = 6;
	__builtin_memcpy(p->flow.saddr, &ih->saddr, 16);
	__builtin_memcpy(p->flow.daddr, &ih->daddr, 16);
	p->dscp = ((ih->priority << 4) | (ih->flow_lbl[0] >> 4)) >> 2;
	p->ecn = (ih->flow_lbl[0] >> 4) & 3;
	nh = ih->nexthdr;
	off += sizeof(ib);

	for (int i = 0; i < ITM_MAX_IPV6_EXT; i++) {
		__u8 hb[8], *h;

		if (nh != IPPROTO_HOPOPTS_ && nh != IPPROTO_ROUTING_ && nh != IPPROTO_DSTOPTS_ &&
		    nh != IPPROTO_FRAGMENT_ && nh != IPPROTO_AH_)
			break;
		if ((r = need(c, off, 8, hb, (void **)&h, slow)))
			return r;
		p->flags |= ITM_PKT_IPV6_EXT;
		if (nh == IPPROTO_FRAGMENT_) {
			__u16 frag = (h[2] << 8) | h[3];

			nh = h[0];
			off += 8;
			if (frag & 0xfff8) {
				p->flags |= ITM_PKT_FRAGMENT;
				p->flow.proto = nh;
				p->l4_off = off;
				p->payload_off = off;
				return PARSED;
			}
			continue;
		}
		off += nh == IPPROTO_AH_ ? (h[1] + 2) * 4 : (h[1] + 1) * 8;
		nh = h[0];
	}
	if (nh == IPPROTO_HOPOPTS_ || nh == IPPROTO_ROUTING_ || nh == IPPROTO_DSTOPTS_ ||
	    nh == IPPROTO_FRAGMENT_ || nh == IPPROTO_AH_)
		return UNSUPPORTED;
	p->flow.proto = nh;
	return parse_l4(c, p, off, slow);
}

static __always_inline int parse(itm_ctx_t *ctx, struct itm_pkt *p, const int slow)
{
	struct cursor c = {
		.ctx = ctx,
		.data = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
		.len = p->len,
	};
	struct ethhdr eb, *eth;
	__u16 proto;
	__u32 off = sizeof(eb);
	int r;

	if ((r = need(&c, 0, sizeof(eb), &eb, (void **)&eth, slow)))
		return r;
	proto = bpf_ntohs(eth->h_proto);
#ifndef ITM_XDP
	if (ctx->vlan_present) {
		/* tag stripped into metadata by the driver */
		p->flags |= ITM_PKT_VLAN;
		p->vlan_id = ctx->vlan_tci & 0xfff;
	}
#endif
	if (proto == 0x8100 || proto == 0x88a8) {
		__be16 tb[2], *tag;

		if ((r = need(&c, off, 4, tb, (void **)&tag, slow)))
			return r;
		p->flags |= ITM_PKT_VLAN;
		p->vlan_id = bpf_ntohs(tag[0]) & 0xfff;
		proto = bpf_ntohs(tag[1]);
		off += 4;
	}
	p->l3_off = off;
	if (proto == ITM_ETH_P_IP)
		return parse_ipv4(&c, p, off, slow);
	if (proto == ITM_ETH_P_IPV6)
		return parse_ipv6(&c, p, off, slow);
	return NON_IP;
}

/* the segments a parsed packet goes on the wire as, and the IP bytes they carry in all */
static __always_inline void count_segments(itm_ctx_t *ctx, struct itm_pkt *p)
{
	__u32 segs = 1, hdr = p->payload_off - p->l3_off;

#ifndef ITM_XDP
	/* an XDP frame is one packet on the wire (a multi-buffer one too); an skb may be a GSO
	 * super-packet, whose gso_segs some paths leave 0 (untrusted sources): count them then */
	if (ctx->gso_size) {
		segs = ctx->gso_segs;
		if (!segs && p->len > p->payload_off)
			segs = (p->len - p->payload_off + ctx->gso_size - 1) / ctx->gso_size;
		if (!segs)
			segs = 1;
		if (segs > 0xffff)
			segs = 0xffff;
	}
#endif
	p->segs = segs;
	p->ip_bytes = p->len - p->l3_off + (segs - 1) * hdr;
}

static __always_inline int ports_match(const struct itm_port_range *r, __u8 n, __u16 port)
{
	for (int i = 0; i < ITM_MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		if (port >= r[i].lo && port <= r[i].hi)
			return 1;
	}
	return 0;
}

static __always_inline int prefix_match(void *trie, __u32 id, __u8 family, const __u8 *addr)
{
	struct itm_lpm_key k = { .prefixlen = 32 + 8 + 128, .id = id, .family = family };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(trie, &k) != NULL;
}

/* ingress: is the packet addressed to this host? egress: was it sent by this host? */
static __always_inline __u8 origin(itm_ctx_t *ctx, struct itm_pkt *p)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (p->local)
		return p->local;
	if (itm_hook == ITM_HOOK_TC_EGRESS) {
		p->local = p->ingress_ifindex == 0 ? 1 : 2;
		return p->local;
	}
	fib.ifindex = p->ifindex;
	fib.l4_protocol = p->flow.proto;
	fib.sport = bpf_htons(p->flow.sport);
	fib.dport = bpf_htons(p->flow.dport);
	if (p->flow.family == 4) {
		fib.family = 2; /* AF_INET */
		__builtin_memcpy(&fib.ipv4_src, p->flow.saddr + 12, 4);
		__builtin_memcpy(&fib.ipv4_dst, p->flow.daddr + 12, 4);
	} else {
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_src, p->flow.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, p->flow.daddr, 16);
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	/* not forwarded (a local or broadcast route), or forwarding is off on this device */
	p->local = (rc == BPF_FIB_LKUP_RET_NOT_FWDED || rc == BPF_FIB_LKUP_RET_FWD_DISABLED) ? 1 : 2;
	return p->local;
}

static __always_inline int interest_match(itm_ctx_t *ctx, const struct itm_slot *sl,
					  struct itm_pkt *p)
{
	__u32 f = sl->flags;
	__u8 proto = p->flow.proto;

	if ((f & (ITM_I_IPV4 | ITM_I_IPV6)) &&
	    !(f & (p->flow.family == 4 ? ITM_I_IPV4 : ITM_I_IPV6)))
		return 0;
	if ((f & ITM_I_PROTO) && !(sl->protos[proto >> 6] & (1ULL << (proto & 63))))
		return 0;
	if ((f & (ITM_I_SPORT | ITM_I_DPORT)) && !(p->flags & ITM_PKT_PORTS))
		return 0;
	if ((f & ITM_I_SPORT) && !ports_match(sl->sport, sl->n_sport, p->flow.sport))
		return 0;
	if ((f & ITM_I_DPORT) && !ports_match(sl->dport, sl->n_dport, p->flow.dport))
		return 0;
	if ((f & ITM_I_INDEV) && sl->indev != p->ingress_ifindex)
		return 0;
	if ((f & ITM_I_OUTDEV) && sl->outdev != p->ifindex)
		return 0;
	if ((f & ITM_I_SRC) && !prefix_match(&itm_src, sl->id, p->flow.family, p->flow.saddr))
		return 0;
	if ((f & ITM_I_DST) && !prefix_match(&itm_dst, sl->id, p->flow.family, p->flow.daddr))
		return 0;
	if (f & (ITM_I_LOCAL | ITM_I_FORWARDED)) {
		__u8 o = origin(ctx, p);

		if (!(f & (o == 1 ? ITM_I_LOCAL : ITM_I_FORWARDED)))
			return 0;
	}
	return 1;
}

/* whether the module can take the packet; if not, the reason is counted in `st` */
static __always_inline int can_divert(struct itm_uctl *uc, struct itm_uflight *fl, struct itm_mstats *st,
				      __u32 len)
{
	if (bpf_ktime_get_ns() > uc->deadline_ns) {
		st->bypass_down++;
		return 0;
	}
	if (fl->sent - fl->back - uc->gone >= uc->max_in_flight) {
		st->bypass_behind++;
		return 0;
	}
	if (len + sizeof(struct itm_trailer) > uc->max_len) {
		st->bypass_size++;
		return 0;
	}
	return 1;
}

/*
 * Sends the packet to a user module: appends the trailer and redirects it into the module's veth
 * pair. Returns TC_ACT_REDIRECT / XDP_REDIRECT, or 0 with the packet unchanged when it has to
 * bypass the module (the reason counted in `st`), or ITM_SHOT when it cannot reach a module that
 * fails closed (counted there too).
 */
static __always_inline int divert(itm_ctx_t *ctx, struct itm_scratch *s, __u32 id, __u32 pos,
				  struct itm_mstats *st)
{
	struct itm_uctl *uc = bpf_map_lookup_elem(&itm_uctl, &id);
	struct itm_uflight *fl = bpf_map_lookup_elem(&itm_uflight, &id);
	struct itm_trailer t = {};
	__u32 len = pkt_len(ctx);

	if (!uc || !fl || !st)
		return 0;
	if (!can_divert(uc, fl, st, len)) {
		if (!(uc->flags & ITM_U_FAIL_CLOSED))
			return 0;
		st->dropped++;
		return ITM_SHOT;
	}
	t.ifindex = s->pkt.ifindex;
	t.hook = itm_hook;
	t.id = id;
	t.pos = pos;
	t.secret = itm_secret;
	t.magic = ITM_TRAILER_MAGIC;
#ifdef ITM_XDP
	{
		/* at xdp the trailer travels as the frame's metadata, in front of the packet: XDP
		 * guarantees headroom, not tailroom; AF_XDP copies the metadata into the frame, just
		 * before the packet, and the module's host moves it behind the packet it sends back */
		void *data, *meta;

		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(t)))
			goto no_room;
		data = (void *)(long)ctx->data;
		meta = (void *)(long)ctx->data_meta;
		if (meta + sizeof(t) > data) {
			bpf_xdp_adjust_meta(ctx, sizeof(t));
			goto no_room;
		}
		__builtin_memcpy(meta, &t, sizeof(t));
	}
#else
	t.iif = s->pkt.ingress_ifindex;
	if (itm_hook == ITM_HOOK_TC_INGRESS)
		t.iif = 0;
	t.mark = ctx->mark;
	t.priority = ctx->priority;
	if (ctx->vlan_present) {
		t.vlan_tci = ctx->vlan_tci;
		t.vlan_proto = ctx->vlan_proto;
		t.flags |= ITM_T_VLAN;
	}
	if (itm_hook == ITM_HOOK_TC_EGRESS && s->pkt.ingress_ifindex == 0)
		t.flags |= ITM_T_CSUM_PARTIAL;
	if (bpf_skb_change_tail(ctx, len + sizeof(t), 0))
		goto no_room;
	if (bpf_skb_store_bytes(ctx, len, &t, sizeof(t), 0)) {
		bpf_skb_change_tail(ctx, len, 0);
		goto no_room;
	}
#endif
	__sync_fetch_and_add(&fl->sent, 1);
	st->diverted++;
	return bpf_redirect(uc->divert_ifindex, 0);
no_room:
	/* the packet could not take the trailer: it goes on past the module, as an error of it (or
	 * is dropped, for a module that fails closed) */
	st->errors++;
	return (uc->flags & ITM_U_FAIL_CLOSED) ? ITM_SHOT : 0;
}

/* whether a mark is that of a segment on its way (struct itm_seg) */
static __always_inline int itm_seg_mark(__u32 mark)
{
	return (mark >> ITM_SEG_MARK_BITS) == (ITM_SEG_MARK >> ITM_SEG_MARK_BITS);
}

/* whether the slot must see the packet's segments rather than the super-packet (struct itm_seg) */
static __always_inline int needs_cut(const struct itm_slot *sl, const struct itm_pkt *p)
{
#ifdef ITM_XDP
	return 0;
#else
	return p->segs > 1 && (sl->segments || sl->user) && !(p->flags & ITM_PKT_SEGMENT);
#endif
}

/*
 * Sends a super-packet through the hook's segmentation pair, to come back as its segments at slot
 * `id` (see struct itm_seg). Returns TC_ACT_REDIRECT, or 0 when there is no pair: the packet then
 * goes on whole (counted).
 */
static __always_inline int cut(itm_ctx_t *ctx, struct itm_scratch *s, __u32 id, __u32 pos)
{
#ifdef ITM_XDP
	return 0;
#else
	__u32 zero = 0, n, idx;
	struct itm_segctl *sc = bpf_map_lookup_elem(&itm_segctl, &zero);
	struct itm_dstats *ds = bpf_map_lookup_elem(&itm_dstats, &zero);
	struct itm_seg *e;

	if (!ds)
		return 0;
	if (!sc || !sc->ifindex) {
		ds->seg_unavailable++;
		return 0;
	}
	n = __sync_fetch_and_add(&sc->next, 1);
	idx = n & (ITM_SEG_RING - 1);
	e = bpf_map_lookup_elem(&itm_segs, &idx);
	if (!e)
		return 0;
	e->mark = ITM_SEG_MARK | (n & ((1U << ITM_SEG_MARK_BITS) - 1));
	e->orig_mark = ctx->mark;
	e->priority = ctx->priority;
	e->iif = s->pkt.ingress_ifindex;
	e->id = id;
	e->pos = pos;
	ctx->mark = e->mark;
	ds->segmented++;
	return bpf_redirect(sc->ifindex, 0);
#endif
}

#define SLOT_CASE(n) case n: itm_tail_call_const(ctx, itm_progs, n); break

static __always_inline void jump_to_slot(itm_ctx_t *ctx, __u32 id)
{
	switch (id) {
	SLOT_CASE(0); SLOT_CASE(1); SLOT_CASE(2); SLOT_CASE(3);
	SLOT_CASE(4); SLOT_CASE(5); SLOT_CASE(6); SLOT_CASE(7);
	SLOT_CASE(8); SLOT_CASE(9); SLOT_CASE(10); SLOT_CASE(11);
	SLOT_CASE(12); SLOT_CASE(13); SLOT_CASE(14); SLOT_CASE(15);
	}
}

static __always_inline void count_chain_error(void)
{
	__u32 zero = 0;
	struct itm_dstats *ds = bpf_map_lookup_elem(&itm_dstats, &zero);

	if (ds)
		ds->chain_errors++;
}

/* run the chain from slot `start` on: find the next module whose interest matches, and jump */
static __always_inline int run_chain(itm_ctx_t *ctx, struct itm_scratch *s, __u32 start)
{
	__u32 version = s->version;
	struct itm_chain *c = bpf_map_lookup_elem(&itm_chain, &version);
	__u32 n, i;

	if (!c)
		return ITM_PASS;
	n = c->n;
	for (i = start; i < ITM_MAX_SLOTS; i++) {
		struct itm_slot *sl;
		struct itm_mstats *st;
		__u32 id, idx;

		if (i >= n)
			break;
		/* an opaque mask keeps the index provably in range for the verifier, which does not
		 * see through clang's strength-reduced pointer otherwise */
		idx = i;
		asm volatile("%0 &= 15" : "+r"(idx));
		sl = &c->slots[idx];
		id = sl->id;
		st = bpf_map_lookup_elem(&itm_mstats, &id);
		if (!interest_match(ctx, sl, &s->pkt)) {
			if (st)
				st->seen++;
			continue;
		}
		if (needs_cut(sl, &s->pkt)) {
			/* the module sees the segments, counted as they come back, not this packet */
			int r = cut(ctx, s, id, i);

			if (r)
				return r;
		}
		if (st) {
			st->seen++;
			st->matched++;
		}
		s->pos = i;
		if (sl->user) {
			int r = divert(ctx, s, id, i, st);

			if (r)
				return r;
			continue;
		}
		jump_to_slot(ctx, id);
		/* the module is gone (unloaded under this packet): count it, and go on past it by
		 * way of the resume program, which carries on from s->pos + 1 */
		if (st)
			st->errors++;
		itm_tail_call_const(ctx, itm_progs, ITM_RESUME_IDX);
		count_chain_error();
		return ITM_PASS;
	}
	return ITM_PASS;
}

static __always_inline void init_pkt(itm_ctx_t *ctx, struct itm_pkt *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->len = pkt_len(ctx);
	p->hook = itm_hook;
#ifdef ITM_XDP
	/* the device the dispatcher serves: the return program runs on the module's pair */
	p->ifindex = itm_dev_ifindex;
	p->ingress_ifindex = itm_dev_ifindex;
#else
	p->ifindex = ctx->ifindex;
	p->ingress_ifindex = ctx->ingress_ifindex;
	if (itm_hook == ITM_HOOK_TC_INGRESS)
		p->ingress_ifindex = p->ifindex;
#endif
}

/*
 * A packet back from a user module: when its trailer is ours, take the trailer off and restore
 * what AF_XDP lost. Returns the slot id it comes back from, or -1 (not a valid return).
 */
static __always_inline int take_back(itm_ctx_t *ctx, struct itm_trailer *t)
{
	__u32 len = pkt_len(ctx);
	struct itm_uflight *fl;
	__u32 id;
	int in_meta = 0;

	if (len < sizeof(*t) + 14 || len > 0xffff)
		return -1;
#ifdef ITM_XDP
	{
		/* a packet the pair bounced (no socket) still has the trailer as metadata */
		void *data = (void *)(long)ctx->data;
		void *meta = (void *)(long)ctx->data_meta;

		if (meta + sizeof(*t) <= data) {
			__builtin_memcpy(t, meta, sizeof(*t));
			in_meta = 1;
		}
	}
#endif
	if (!in_meta && itm__load_bytes(ctx, len - sizeof(*t), t, sizeof(*t)))
		return -1;
	if (t->magic != ITM_TRAILER_MAGIC || t->secret != itm_secret || t->hook != itm_hook ||
	    t->id >= ITM_MAX_SLOTS)
		return -1;
#ifdef ITM_XDP
	if (t->ifindex != itm_dev_ifindex)
		return -1;
	if (in_meta ? bpf_xdp_adjust_meta(ctx, sizeof(*t)) : bpf_xdp_adjust_tail(ctx, -(int)sizeof(*t)))
		return -1;
#else
	if (t->ifindex != ctx->ifindex)
		return -1;
	if (bpf_skb_change_tail(ctx, len - sizeof(*t), 0))
		return -1;
	ctx->mark = t->mark;
	ctx->priority = t->priority;
	if (t->flags & ITM_T_VLAN)
		bpf_skb_vlan_push(ctx, t->vlan_proto, t->vlan_tci);
#endif
	id = t->id;
	fl = bpf_map_lookup_elem(&itm_uflight, &id);
	if (fl)
		__sync_fetch_and_add(&fl->back, 1);
	return id;
}

#ifndef ITM_XDP
/*
 * A segment back from the segmentation pair: when its mark names a live entry of the ring, put
 * the packet's own mark and priority back. Returns the entry, or NULL (not one of ours).
 */
static __always_inline struct itm_seg *take_segment(struct __sk_buff *ctx)
{
	__u32 idx = ctx->mark & (ITM_SEG_RING - 1);
	struct itm_seg *e = bpf_map_lookup_elem(&itm_segs, &idx);

	if (!e || e->mark != ctx->mark)
		return NULL;
	ctx->mark = e->orig_mark;
	ctx->priority = e->priority;
	return e;
}
#endif

/* where the chain goes on for a packet back from the module `id`: after its slot in the live
 * chain (which may have changed while the packet was away), else after the position it had; for
 * a segment (`at`), at that slot */
static __always_inline __u32 resume_at(struct itm_scratch *s, __u32 id, __u32 pos, int at)
{
	__u32 version = s->version;
	struct itm_chain *c = bpf_map_lookup_elem(&itm_chain, &version);
	__u32 after = at ? 0 : 1;

	if (!c)
		return ITM_MAX_SLOTS;
	for (__u32 i = 0; i < ITM_MAX_SLOTS; i++) {
		if (i >= c->n)
			break;
		if (c->slots[i].id == id)
			return i + after;
	}
	return pos + after;
}

/*
 * Parses the packet and runs the chain; `returning` says it comes back from a user module (at tc,
 * the mark says so; at xdp, every packet of the return program does).
 */
static __always_inline int dispatch(itm_ctx_t *ctx, int returning)
{
	__u32 zero = 0, start = 0;
	struct itm_scratch *s = bpf_map_lookup_elem(&itm_scratch, &zero);
	struct itm_dstats *ds = bpf_map_lookup_elem(&itm_dstats, &zero);
	struct itm_ctl *ctl = bpf_map_lookup_elem(&itm_ctl, &zero);
	struct itm_trailer t;
	int back = -1, seg = 0;
	__u32 seg_iif = 0;
	int r;

	if (!s || !ds || !ctl)
		return ITM_PASS;
#ifndef ITM_XDP
	if (itm_seg_mark(ctx->mark)) {
		struct itm_seg *e = take_segment(ctx);

		if (e) {
			seg = 1;
			back = e->id;
			t.pos = e->pos;
			seg_iif = e->iif;
			ds->segments++;
		} else {
			ds->bad_returns++;
		}
	}
#endif
	if (seg) {
		/* counted above */
	} else if (returning) {
		back = take_back(ctx, &t);
		if (back < 0) {
			ds->bad_returns++;
#ifdef ITM_XDP
			/* nothing but the module's socket sends into its pair: this is no packet of ours */
			return XDP_DROP;
#endif
		} else {
			ds->returned++;
#ifndef ITM_XDP
			/* the module sent it on itself: nothing of the chain is left for it */
			if (t.flags & ITM_T_REDIRECT)
				return bpf_redirect_neigh(t.iif, NULL, 0, 0);
#endif
		}
	} else {
		ds->packets++;
	}
	init_pkt(ctx, &s->pkt);
	r = itm_force_slow ? SLOW : parse(ctx, &s->pkt, 0);
	if (r == SLOW) {
		/* a header lies past the linear part: parse again, copying the headers out */
		init_pkt(ctx, &s->pkt);
		r = parse(ctx, &s->pkt, 1);
	}
	if (back >= 0 && itm_hook == ITM_HOOK_TC_EGRESS)
		s->pkt.ingress_ifindex = seg ? seg_iif : t.iif;
	switch (r) {
	case PARSED:
		if (back < 0)
			ds->parsed++;
		count_segments(ctx, &s->pkt);
		if (seg)
			s->pkt.flags |= ITM_PKT_SEGMENT;
		if (s->pkt.flags & ITM_PKT_FRAGMENT)
			ds->fragments++;
		break;
	case NON_IP:
		ds->non_ip++;
		return ITM_PASS;
	case TRUNCATED:
		ds->truncated++;
		return ITM_PASS;
	case MALFORMED:
		ds->malformed++;
		return ITM_PASS;
	default:
		ds->unsupported++;
		return ITM_PASS;
	}
	s->version = ctl->active & 1;
	if (back >= 0)
		start = resume_at(s, back, t.pos, seg);
	s->pos = start;
	if (start >= ITM_MAX_SLOTS)
		return ITM_PASS;
	return run_chain(ctx, s, start);
}

SEC(ITM_SEC)
int itm_dispatch(itm_ctx_t *ctx)
{
#ifdef ITM_XDP
	return dispatch(ctx, 0);
#else
	return dispatch(ctx, ctx->mark == ITM_RETURN_MARK);
#endif
}

/* modules tail-call here when they are done with a packet */
SEC(ITM_SEC)
int itm_resume(itm_ctx_t *ctx)
{
	__u32 zero = 0;
	struct itm_scratch *s = bpf_map_lookup_elem(&itm_scratch, &zero);

	if (!s || s->pos >= ITM_MAX_SLOTS - 1)
		return ITM_PASS;
	return run_chain(ctx, s, s->pos + 1);
}

#ifndef ITM_XDP
/* on the far end of the hook's segmentation pair, tc ingress: every segment goes back to the
 * device's hook (see struct itm_seg); nothing else comes in there */
SEC("tc")
int itm_from_seg(struct __sk_buff *skb)
{
	if (!itm_seg_mark(skb->mark))
		return TC_ACT_SHOT;
	return bpf_redirect(itm_dev_ifindex, itm_hook == ITM_HOOK_TC_INGRESS ? BPF_F_INGRESS : 0);
}

/* on the near end of a tc-ingress hook's segmentation pair, tc ingress: what a module sent back
 * through the pair's GRO path (itm_redirect_ingress_gro), merged, goes into the device's receive
 * path, where the dispatcher sees it as it would a packet from the wire */
SEC("tc")
int itm_from_gro(struct __sk_buff *skb)
{
	return bpf_redirect(itm_dev_ifindex, BPF_F_INGRESS);
}
#endif

#ifdef ITM_XDP
/*
 * On the near end (A) of each user module's pair at the xdp hook: what the module sends back
 * arrives here, and the chain goes on after the module's slot, as the device's dispatcher would
 * have gone on. A packet that passes the rest of the chain leaves by XDP_PASS, and the tc program
 * on A (itm_from_xsk) puts it into the device's receive path, where it was going.
 */
SEC("xdp")
int itm_return(struct xdp_md *ctx)
{
	return dispatch(ctx, 1);
}
#endif
