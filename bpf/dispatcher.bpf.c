// SPDX-License-Identifier: GPL-2.0
/*
 * The itm dispatcher: one instance per device and hook. It parses each packet once, then runs the
 * modules registered on its hook in chain order, each gated by its interest. Modules are separate
 * programs reached by tail calls through itm_progs; each returns here through the resume program.
 * Built twice: for tc (ingress and egress, by a tcx link or a cls_bpf filter on clsact: the same
 * program and return codes, see ITM_PASS in itm.h) and, with -DITM_XDP, for XDP.
 */
#include "itm/itm.h"

char LICENSE[] SEC("license") = "GPL";

#include "dispatcher/maps.h"
#include "dispatcher/parse.h"
#include "dispatcher/interest.h"
#include "dispatcher/user.h"
#include "dispatcher/segment.h"

/* ---- the chain ---- */

#define SLOT_CASE(n)                                                                                         \
	case n:                                                                                              \
		itm_tail_call_const(ctx, itm_progs, n);                                                      \
		break

static __always_inline void jump_to_slot(itm_ctx_t *ctx, __u32 id)
{
	switch (id) {
		SLOT_CASE(0);
		SLOT_CASE(1);
		SLOT_CASE(2);
		SLOT_CASE(3);
		SLOT_CASE(4);
		SLOT_CASE(5);
		SLOT_CASE(6);
		SLOT_CASE(7);
		SLOT_CASE(8);
		SLOT_CASE(9);
		SLOT_CASE(10);
		SLOT_CASE(11);
		SLOT_CASE(12);
		SLOT_CASE(13);
		SLOT_CASE(14);
		SLOT_CASE(15);
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
