// SPDX-License-Identifier: GPL-2.0
/*
 * The itm dispatcher: one instance per device and hook. It parses each packet once, then runs the
 * modules registered on its hook in chain order, each gated by its interest. The modules are
 * linked into this program and called directly (see "the chain" below).
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

/*
 * The hook's program is composed: this object, linked (libbpf's static linker, see
 * src/registry/compose.ts) with one renamed copy of each kernel module instance of the chain, the
 * one at position k of the chain as itm_pos_<k>. The weak stubs below stand for the positions no
 * kernel module fills (a user module's, or past the chain's end): the linker keeps an instance's
 * strong definition over the stub, and the kernel sees direct calls (global functions, each
 * verified once), in chain order, with no dispatch on the slot between them. Every change of the
 * chain links a new program for a new table (itm_linked): the two are swapped in together.
 */
#define POS_STUB(n)                                                                                          \
	__weak __noinline int itm_pos_##n(itm_ctx_t *ctx, struct itm_pkt *pkt)                               \
	{                                                                                                    \
		return ITM_NO_MODULE;                                                                        \
	}
POS_STUB(0)
POS_STUB(1)
POS_STUB(2)
POS_STUB(3)
POS_STUB(4)
POS_STUB(5)
POS_STUB(6)
POS_STUB(7)
POS_STUB(8)
POS_STUB(9)
POS_STUB(10)
POS_STUB(11)
POS_STUB(12)
POS_STUB(13)
POS_STUB(14)
POS_STUB(15)

static __always_inline void count_chain_error(void)
{
	__u32 zero = 0;
	struct itm_percpu *pc = bpf_map_lookup_elem(&itm_percpu, &zero);

	if (pc)
		pc->dstats.chain_errors++;
}

/* what run_slot returns when the chain goes on */
#define GO_ON 0x7fff

/* the packet at position `k`, whose module (if a kernel one) is `fn` */
static __always_inline int run_slot(itm_ctx_t *ctx, struct itm_scratch *s, struct itm_mstats_table *mt,
				    __u32 k, int (*fn)(itm_ctx_t *, struct itm_pkt *))
{
	/* read through volatile: the compiler must not take the zeros it was built with */
	const volatile struct itm_slot *sl = &itm_linked.slots[k];
	__u32 id = sl->id, flags = sl->flags;
	__u8 user = sl->user, segments = sl->segments;
	struct itm_mstats *st = &mt->slots[id & (ITM_MAX_SLOTS - 1)];
	int r, v;

	/* a slot without interest (flags 0) costs nothing: the verifier knows it has none */
	if (flags && !itm_interest_match(ctx, k, &s->pkt)) {
		st->skipped++;
		return GO_ON;
	}
	if (user || segments) {
		if (needs_cut(&s->pkt)) {
			/* the module sees the segments, counted as they come back, not this packet */
			r = itm_cut(ctx, s, id, k);
			if (r)
				return r;
		}
		if (user) {
			st->matched++;
			s->pos = k;
			r = itm_divert(ctx, s, id, st);
			return r ? r : GO_ON;
		}
	}
	r = fn(ctx, &s->pkt);
	if (r == ITM_NO_MODULE) {
		/* a kernel slot the program has no instance for: counted, and the chain goes on */
		st->matched++;
		st->errors++;
		count_chain_error();
		return GO_ON;
	}
	v = ITM_RESULT_VERDICT(r);
	{
		__u32 cls = ITM_RESULT_CLASS(r);

		st->classes[cls < ITM_CLASS_BUCKETS ? cls : ITM_CLASS_BUCKETS - 1]++;
	}
	if (v == ITM_DROP) {
		st->dropped++;
		return ITM_SHOT;
	}
	if (v < 0)
		st->errors++;
	if (v == ITM_REDIRECT)
		return ITM_REDIRECTED;
	return GO_ON;
}

#define AT(k)                                                                                                \
	if ((k) >= start) {                                                                                  \
		if ((k) >= n)                                                                                \
			return ITM_PASS;                                                                     \
		r = run_slot(ctx, s, mt, k, itm_pos_##k);                                                    \
		if (r != GO_ON)                                                                              \
			return r;                                                                            \
	}

/* run the chain from position `start` on: each module whose interest matches, in order */
static __always_inline int run_chain(itm_ctx_t *ctx, struct itm_percpu *pc, __u32 start)
{
	struct itm_scratch *s = &pc->scratch;
	struct itm_mstats_table *mt = &pc->mstats;
	__u32 n = itm_linked.n;
	int r;

	if (n == 0)
		return ITM_PASS;
	AT(0)
	AT(1)
	AT(2)
	AT(3)
	AT(4)
	AT(5)
	AT(6)
	AT(7)
	AT(8)
	AT(9)
	AT(10)
	AT(11)
	AT(12)
	AT(13)
	AT(14)
	AT(15)
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

/* the two ways to parse, each a function of its own: the header copies of the slow way stay off
 * the frame that calls the modules, whose stacks add to it (512 bytes for the whole chain) */
__noinline int itm_parse_linear(itm_ctx_t *ctx, struct itm_pkt *p)
{
	if (!p)
		return MALFORMED;
	init_pkt(ctx, p);
	return parse(ctx, p, 0);
}
__noinline int itm_parse_copying(itm_ctx_t *ctx, struct itm_pkt *p)
{
	if (!p)
		return MALFORMED;
	init_pkt(ctx, p);
	return parse(ctx, p, 1);
}

/* where the chain goes on for a packet back from the module `id`: after its slot in the live
 * chain (which may have changed while the packet was away), else after the position it had; for
 * a segment (`at`), at that slot */
static __always_inline __u32 resume_at(__u32 id, __u32 pos, int at)
{
	__u32 after = at ? 0 : 1;

	for (__u32 i = 0; i < ITM_MAX_SLOTS; i++) {
		if (i >= itm_linked.n)
			break;
		if (itm_linked.slots[i].id == id)
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
	/* the one lookup of the packet's per-CPU state: its scratch, and every counter */
	struct itm_percpu *pc = bpf_map_lookup_elem(&itm_percpu, &zero);
	struct itm_scratch *s;
	struct itm_dstats *ds;
	struct itm_trailer t;
	int back = -1, seg = 0;
	__u32 seg_iif = 0;
	int r;

	if (!pc)
		return ITM_PASS;
	s = &pc->scratch;
	ds = &pc->dstats;
	/* the common case first, straight to the chain: a new packet the fast parse has whole */
	if (!returning && !itm_force_slow
#ifndef ITM_XDP
	    && !itm_seg_mark(ctx->mark)
#endif
	) {
		ds->packets++;
		r = parse_fast(ctx, &s->pkt);
		if (r == PARSED) {
			ds->parsed++;
			goto chain;
		}
		goto general;
	}
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
		back = itm_take_back(ctx, &t);
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
general:
	/* the general parse: whatever parse_fast does not take, and what comes back from a module */
	r = itm_force_slow ? SLOW : itm_parse_linear(ctx, &s->pkt);
	/* a header lies past the linear part: parse again, copying the headers out */
	if (r == SLOW)
		r = itm_parse_copying(ctx, &s->pkt);
	if (r == PARSED)
		count_segments(ctx, &s->pkt);
	if (back >= 0 && itm_hook == ITM_HOOK_TC_EGRESS)
		s->pkt.ingress_ifindex = seg ? seg_iif : t.iif;
	switch (r) {
	case PARSED:
		if (back < 0)
			ds->parsed++;
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
	if (back >= 0)
		start = resume_at(back, t.pos, seg);
	if (start >= ITM_MAX_SLOTS)
		return ITM_PASS;
chain:
	return run_chain(ctx, pc, start);
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
 *
 * itm_return stays on the pairs for the hook's life; it tail-calls the return entry of the
 * hook's current composed program (itm_progs[ITM_RETURN_IDX], replaced at every relink).
 */
SEC("xdp")
int itm_return(struct xdp_md *ctx)
{
	itm_tail_call_const(ctx, itm_progs, ITM_RETURN_IDX);
	return XDP_DROP;
}

SEC("xdp")
int itm_return_chain(struct xdp_md *ctx)
{
	return dispatch(ctx, 1);
}
#endif
