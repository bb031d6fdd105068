/* SPDX-License-Identifier: GPL-2.0 */
/*
 * User-space modules: the divert into a module's veth pair (the trailer appended) and the return
 * (the trailer checked and taken off). See struct itm_trailer in itm/abi.h.
 */
#ifndef ITM_DISPATCHER_USER_H
#define ITM_DISPATCHER_USER_H

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
/* the secret a returning packet's trailer carries (struct itm_ctl) */
static __always_inline __u32 trailer_secret(void)
{
	__u32 zero = 0;
	struct itm_ctl *ctl = bpf_map_lookup_elem(&itm_ctl, &zero);

	return ctl ? ctl->secret : 0;
}

__noinline int itm_divert(itm_ctx_t *ctx, struct itm_scratch *s, __u32 id, struct itm_mstats *st)
{
	struct itm_uctl *uc = bpf_map_lookup_elem(&itm_uctl, &id);
	struct itm_uflight *fl = bpf_map_lookup_elem(&itm_uflight, &id);
	struct itm_trailer t = {};
	__u32 len = pkt_len(ctx);

	if (!uc || !fl || !st || !s)
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
	t.pos = s->pos;
	t.secret = trailer_secret();
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

/*
 * A packet back from a user module: when its trailer is ours, take the trailer off and restore
 * what AF_XDP lost. Returns the slot id it comes back from, or -1 (not a valid return).
 */
__noinline int itm_take_back(itm_ctx_t *ctx, struct itm_trailer *t)
{
	__u32 len = pkt_len(ctx);
	struct itm_uflight *fl;
	__u32 id;
	int in_meta = 0;

	if (!t || len < sizeof(*t) + 14 || len > 0xffff)
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
	if (t->magic != ITM_TRAILER_MAGIC || t->secret != trailer_secret() || t->hook != itm_hook ||
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

#endif
