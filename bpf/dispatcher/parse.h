/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The parser: Ethernet (one VLAN tag), IPv4 with options, IPv6 with the common extension headers,
 * TCP/UDP/SCTP/ICMP, once per packet into struct itm_pkt; and the segments it goes on the wire as.
 */
#ifndef ITM_DISPATCHER_PARSE_H
#define ITM_DISPATCHER_PARSE_H

enum parse_result { PARSED, NON_IP, TRUNCATED, MALFORMED, UNSUPPORTED, SLOW };

#define IPPROTO_HOPOPTS_  0
#define IPPROTO_ROUTING_  43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_	  51
#define IPPROTO_DSTOPTS_  60
#define IPPROTO_ICMPV6_	  58
#define IPPROTO_SCTP_	  132

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
	__u32 len; /* skb->len: tells a truncated packet from one that is merely not linear */
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
		struct {
			__be16 source, dest;
			__u32 vtag, csum;
		} sb, *sh;

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

/* the segments a packet of `len` bytes, its IP header at `l3` and its payload at `payload`, goes
 * on the wire as (returned), and the IP bytes they carry in all (in `ip_bytes`) */
static __always_inline __u32 segments_of(itm_ctx_t *ctx, __u32 len, __u32 l3, __u32 payload, __u32 *ip_bytes)
{
	__u32 segs = 1;

#ifndef ITM_XDP
	/* an XDP frame is one packet on the wire (a multi-buffer one too); an skb may be a GSO
	 * super-packet, whose gso_segs some paths leave 0 (untrusted sources): count them then */
	__u32 gso = ctx->gso_size;

	if (gso) {
		segs = ctx->gso_segs;
		if (!segs && len > payload)
			segs = (len - payload + gso - 1) / gso;
		if (!segs)
			segs = 1;
		if (segs > 0xffff)
			segs = 0xffff;
	}
#endif
	*ip_bytes = len - l3 + (segs - 1) * (payload - l3);
	return segs;
}

/*
 * The common case in one pass: Ethernet with no tag, IPv4 without options (not a later fragment)
 * or IPv6 without extension headers, then TCP or UDP, all in the linear part. It fills the whole
 * of struct itm_pkt, its segment counts too, with a few word-wide stores, where
 * init_pkt and parse write it field by field (zeroing it first): about 6 ns of the 13 the general
 * way costs a packet here. Any other packet is SLOW: the general parse has it, from the start.
 */
_Static_assert(__builtin_offsetof(struct itm_pkt, flow.sport) == 32 &&
		       __builtin_offsetof(struct itm_pkt, flow.proto) == 36 &&
		       __builtin_offsetof(struct itm_pkt, l3_off) == 40 &&
		       __builtin_offsetof(struct itm_pkt, len) == 48 &&
		       __builtin_offsetof(struct itm_pkt, hook) == 60 &&
		       __builtin_offsetof(struct itm_pkt, icmp_type) == 64 &&
		       __builtin_offsetof(struct itm_pkt, segs) == 68 &&
		       __builtin_offsetof(struct itm_pkt, ip_bytes) == 72 && sizeof(struct itm_pkt) == 76,
	       "parse_fast writes struct itm_pkt by its offsets");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "parse_fast packs little-endian words");

static __always_inline int parse_fast(itm_ctx_t *ctx, struct itm_pkt *pkt)
{
	/* a map value's start is 8-aligned, and so is the packet in struct itm_scratch */
	__u64 *w = __builtin_assume_aligned(pkt, 8);
	__u32 *h = (__u32 *)w;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l3 = sizeof(*eth), l4, payload, ports, len;
	__u8 proto, tos, flags, tcp_flags = 0;

	/* the shortest packet of the fast way: IPv4 and UDP */
	if (data + sizeof(*eth) + sizeof(struct iphdr) + sizeof(struct udphdr) > end)
		return SLOW;
#ifndef ITM_XDP
	if (ctx->vlan_present)
		return SLOW;
#endif
	if (eth->h_proto == bpf_htons(ITM_ETH_P_IP)) {
		struct iphdr *ip = data + l3;

		/* version 4, no options; a later fragment has no ports */
		if (*(__u8 *)ip != 0x45 || (ip->frag_off & bpf_htons(0x1fff)))
			return SLOW;
		proto = ip->protocol;
		tos = ip->tos;
		l4 = l3 + sizeof(*ip);
		w[0] = 0;
		h[2] = bpf_htonl(0xffff);
		h[3] = ip->saddr;
		w[2] = 0;
		h[6] = bpf_htonl(0xffff);
		h[7] = ip->daddr;
		h[9] = proto | 4 << 8;
	} else if (eth->h_proto == bpf_htons(ITM_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) + sizeof(struct udphdr) > end || (*(__u8 *)ip6 >> 4) != 6)
			return SLOW;
		proto = ip6->nexthdr;
		tos = (*(__u8 *)ip6 << 4) | (ip6->flow_lbl[0] >> 4);
		l4 = l3 + sizeof(*ip6);
		__builtin_memcpy(w, &ip6->saddr, 16);
		__builtin_memcpy(w + 2, &ip6->daddr, 16);
		h[9] = proto | 6 << 8;
	} else {
		return SLOW;
	}
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4;

		if ((void *)(th + 1) > end || th->doff < 5)
			return SLOW;
		tcp_flags = ((__u8 *)th)[13];
		payload = l4 + th->doff * 4;
		ports = *(__u32 *)th;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = data + l4;

		payload = l4 + sizeof(*uh);
		ports = *(__u32 *)uh;
	} else {
		return SLOW;
	}
	/* sport and dport, each in host order */
	h[8] = bpf_ntohs(ports & 0xffff) | (__u32)bpf_ntohs(ports >> 16) << 16;
	w[5] = l3 | l4 << 16 | (__u64)payload << 32;
	len = pkt_len(ctx);
	h[12] = len;
#ifdef ITM_XDP
	h[13] = itm_dev_ifindex;
	h[14] = itm_dev_ifindex;
#else
	{
		__u32 ifindex = ctx->ifindex, iif = ctx->ingress_ifindex;

		h[13] = ifindex;
		h[14] = itm_hook == ITM_HOOK_TC_INGRESS ? ifindex : iif;
	}
#endif
	/* hook, dscp, ecn, tcp_flags; icmp type and code (none), flags, local (not known yet) */
	h[15] = (__u8)itm_hook | (__u32)(tos >> 2) << 8 | (__u32)(tos & 3) << 16 | (__u32)tcp_flags << 24;
	flags = ITM_PKT_L4 | ITM_PKT_PORTS;
	h[16] = (__u32)flags << 16;
	/* segs (and pad), ip_bytes */
	h[17] = segments_of(ctx, len, l3, payload, &h[18]);
	return PARSED;
}

/* the segment counts of a packet the general parse had (struct itm_pkt's segs and ip_bytes) */
static __always_inline void count_segments(itm_ctx_t *ctx, struct itm_pkt *p)
{
	__u32 ip_bytes;

	p->segs = segments_of(ctx, p->len, p->l3_off, p->payload_off, &ip_bytes);
	p->ip_bytes = ip_bytes;
}

#endif
