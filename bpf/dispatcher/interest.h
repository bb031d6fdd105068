/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A slot's interest against the parsed packet: protocols, ports, devices, prefixes (a few IPv4
 * ones in the slot itself, any others in the LPM tries), local or forwarded.
 */
#ifndef ITM_DISPATCHER_INTEREST_H
#define ITM_DISPATCHER_INTEREST_H

static __always_inline int ports_match(const volatile struct itm_port_range *r, __u8 n, __u16 port)
{
	for (int i = 0; i < ITM_MAX_PORT_RANGES; i++) {
		if (i >= n)
			break;
		if (port >= r[i].lo && port <= r[i].hi)
			return 1;
	}
	return 0;
}

/* prefix_match and origin are functions of their own: their keys stay off the frame that calls
 * the modules (see parse_linear) */
static __noinline int prefix_match(void *trie, __u32 id, __u8 family, const __u8 *addr)
{
	struct itm_lpm_key k = {.prefixlen = 32 + 8 + 128, .id = id, .family = family};

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(trie, &k) != NULL;
}

/* a slot's own IPv4 prefixes (struct itm_prefix4): a mask and a compare each, no map lookup */
static __always_inline int prefix4_match(const volatile struct itm_prefix4 *pf, __u8 n, __u8 family,
					 const __u8 *addr)
{
	__u32 a;

	if (family != 4)
		return 0;
	__builtin_memcpy(&a, addr + 12, 4);
	for (int i = 0; i < ITM_INLINE_PREFIXES; i++) {
		if (i >= n)
			break;
		if ((a & pf[i].mask) == pf[i].addr)
			return 1;
	}
	return 0;
}

static __always_inline int addr_match(void *trie, const volatile struct itm_prefix4 *pf, __u8 n, __u32 id,
				      const struct itm_pkt *p, const __u8 *addr)
{
	return n ? prefix4_match(pf, n, p->flow.family, addr) : prefix_match(trie, id, p->flow.family, addr);
}

/* ingress: is the packet addressed to this host? egress: was it sent by this host? */
static __noinline __u8 origin(itm_ctx_t *ctx, struct itm_pkt *p)
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

/* a global function: verified once, not once per slot of the chain; `k` is the slot's position */
__noinline int itm_interest_match(itm_ctx_t *ctx, __u32 k, struct itm_pkt *p)
{
	const volatile struct itm_slot *sl = &itm_linked.slots[k & (ITM_MAX_SLOTS - 1)];
	__u32 f;
	__u8 proto;

	if (!p)
		return 0;
	f = sl->flags;
	proto = p->flow.proto;

	if ((f & (ITM_I_IPV4 | ITM_I_IPV6)) && !(f & (p->flow.family == 4 ? ITM_I_IPV4 : ITM_I_IPV6)))
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
	if ((f & ITM_I_SRC) && !addr_match(&itm_src, sl->src4, sl->n_src4, sl->id, p, p->flow.saddr))
		return 0;
	if ((f & ITM_I_DST) && !addr_match(&itm_dst, sl->dst4, sl->n_dst4, sl->id, p, p->flow.daddr))
		return 0;
	if (f & (ITM_I_LOCAL | ITM_I_FORWARDED)) {
		__u8 o = origin(ctx, p);

		if (!(f & (o == 1 ? ITM_I_LOCAL : ITM_I_FORWARDED)))
			return 0;
	}
	return 1;
}

#endif
