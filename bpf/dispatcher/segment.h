/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Segmentation: a super-packet a module must see as segments goes through the hook's segmentation
 * pair, and its segments come back at the module's slot. See struct itm_seg in itm/abi.h.
 */
#ifndef ITM_DISPATCHER_SEGMENT_H
#define ITM_DISPATCHER_SEGMENT_H

/* whether a mark is that of a segment on its way (struct itm_seg) */
static __always_inline int itm_seg_mark(__u32 mark)
{
	return (mark >> ITM_SEG_MARK_BITS) == (ITM_SEG_MARK >> ITM_SEG_MARK_BITS);
}

/* whether a slot that must see each packet as it goes on the wire (a user module's, or one with
 * itm_slot.segments) must have this one cut into its segments first (struct itm_seg) */
static __always_inline int needs_cut(const struct itm_pkt *p)
{
#ifdef ITM_XDP
	return 0;
#else
	return p->segs > 1 && !(p->flags & ITM_PKT_SEGMENT);
#endif
}

/*
 * Sends a super-packet through the hook's segmentation pair, to come back as its segments at slot
 * `id` (see struct itm_seg). Returns TC_ACT_REDIRECT, or 0 when there is no pair: the packet then
 * goes on whole (counted).
 */
__noinline int itm_cut(itm_ctx_t *ctx, struct itm_scratch *s, __u32 id, __u32 pos)
{
#ifdef ITM_XDP
	return 0;
#else
	if (!s)
		return 0;
	__u32 zero = 0, n, idx;
	struct itm_segctl *sc = bpf_map_lookup_elem(&itm_segctl, &zero);
	struct itm_percpu *pc = bpf_map_lookup_elem(&itm_percpu, &zero);
	struct itm_dstats *ds;
	struct itm_seg *e;

	if (!pc)
		return 0;
	ds = &pc->dstats;
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

#endif
