/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The itm kernel-module SDK: the one header a module author includes.
 *
 * A module is one C file that defines up to three per-packet functions and names them with
 * ITM_MODULE():
 *
 *   static __always_inline __u32 classify(struct itm_ctx *c);            // 0: not interested
 *   static __always_inline void  log(struct itm_ctx *c, __u32 cls);      // sees every class
 *   static __always_inline int   process(struct itm_ctx *c, __u32 cls);  // cls != 0 only:
 *                                     // ITM_ACCEPT, ITM_DROP, ITM_REDIRECT (sent on with
 *                                     // bpf_redirect*: the chain ends), or a negative error
 *                                     // (the packet goes on)
 *
 * The dispatcher has already parsed the packet (c->pkt) and checked the module's interest, so a
 * module sees only packets it registered for. Parameters are `const volatile` globals that
 * itmctl sets before the module is loaded (see modules/README.md).
 */
#ifndef ITM_ITM_H
#define ITM_ITM_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"

#ifndef TC_ACT_OK
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK     0
#define TC_ACT_SHOT   2
#endif
#ifndef TC_ACT_REDIRECT
#define TC_ACT_REDIRECT 7
#endif

/*
 * One source, two hooks: every object is built for tc (struct __sk_buff) and, with -DITM_XDP,
 * for XDP (struct xdp_md). A module that keeps to this header's helpers runs at both.
 */
/* a macro, not a typedef: CO-RE relocations must name the kernel's own type */
#ifdef ITM_XDP
#define itm_ctx_t struct xdp_md
#define ITM_SEC	  "xdp"
/* a packet that goes on: to the stack (or to the next program on the device) */
#define ITM_PASS       XDP_PASS
#define ITM_SHOT       XDP_DROP
#define ITM_REDIRECTED XDP_REDIRECT
#else
#define itm_ctx_t      struct __sk_buff
#define ITM_SEC	       "tc"
/* TC_ACT_UNSPEC lets the programs other tools have on the same hook run after itm's (TC_ACT_OK
 * would end classification there). The codes mean the same under both attachments: on a tcx link
 * -1 is TCX_NEXT (the next tcx program, then clsact's filters), 0 TCX_PASS, 2 TCX_DROP and 7
 * TCX_REDIRECT; tcx takes any other code for TCX_NEXT. */
#define ITM_PASS       TC_ACT_UNSPEC
#define ITM_SHOT       TC_ACT_SHOT
#define ITM_REDIRECTED TC_ACT_REDIRECT
#endif
#define ITM_ETH_P_IP   0x0800
#define ITM_ETH_P_IPV6 0x86DD

/* ---- maps shared by the dispatcher and every module of one hook: weak, so the one instance of
 * each in the hook's composed program serves them all ---- */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, ITM_PROGS_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} itm_progs SEC(".maps") __weak;

/* the hook's segmentation pair (see struct itm_segctl in abi.h) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct itm_segctl);
} itm_segctl SEC(".maps") __weak;

/* A tail call whose key is an immediate: the verifier sees a constant, and the JIT turns it into a
 * patched direct jump instead of a retpolined indirect one (docs/kernel.md: 1-2 ns instead of ~10). */
#define itm_tail_call_const(ctx, map, key)                                                                   \
	asm volatile("r1 = %[c]\n\t"                                                                         \
		     "r2 = %[m] ll\n\t"                                                                      \
		     "r3 = %[k]\n\t"                                                                         \
		     "call 12\n\t" ::[c] "r"(ctx),                                                           \
		     [m] "i"(&(map)), [k] "i"(key)                                                           \
		     : "r0", "r1", "r2", "r3", "r4", "r5")

/* what a module's functions get: the hook's context (an skb at tc, an xdp_md at xdp) and the
 * packet as the dispatcher parsed it */
struct itm_ctx {
	itm_ctx_t *ctx;
	struct itm_pkt *pkt;
};

static __always_inline int itm_is_ipv4(const struct itm_ctx *c)
{
	return c->pkt->flow.family == 4;
}
static __always_inline int itm_is_ipv6(const struct itm_ctx *c)
{
	return c->pkt->flow.family == 6;
}

/* the load-bytes helper of the hook's context (the dispatcher uses it too) */
static __always_inline int itm__load_bytes(itm_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
#ifdef ITM_XDP
	return bpf_xdp_load_bytes(ctx, off, to, len);
#else
	return bpf_skb_load_bytes(ctx, off, to, len);
#endif
}

/* copy bytes of the packet, from `off` (relative to the Ethernet header) */
static __always_inline int itm_load_bytes(struct itm_ctx *c, __u32 off, void *to, __u32 len)
{
	return itm__load_bytes(c->ctx, off, to, len);
}

/*
 * Set the DSCP (0..63) of an IPv4 or IPv6 packet, keeping its two ECN bits.
 * IPv4: the header checksum is fixed incrementally. IPv6 has no header checksum, and neither
 * pseudo-header covers the TOS / traffic class, so TCP/UDP checksums stay valid.
 * Returns 0, or a negative error.
 */
static __always_inline int itm_set_dscp(struct itm_ctx *c, __u8 dscp)
{
	struct itm_pkt *p = c->pkt;
	__u32 off = p->l3_off;

	dscp &= 0x3f;
	if (p->dscp == dscp)
		return 0;
#ifdef ITM_XDP
	{
		/* the frame is linear: rewrite in place, the IPv4 checksum by RFC 1624 */
		void *data = (void *)(long)c->ctx->data;
		void *end = (void *)(long)c->ctx->data_end;
		__u8 *ip;

		if (off > 64)
			return -1;
		ip = data + off;
		if ((void *)(ip + 12) > end)
			return -1;
		if (p->flow.family == 4) {
			__u16 *w = (__u16 *)ip;
			__u16 old_w = w[0];
			__u32 sum;

			ip[1] = (dscp << 2) | (ip[1] & 0x3);
			sum = (__u16)~w[5] + (__u16)~old_w + w[0];
			sum = (sum & 0xffff) + (sum >> 16);
			sum = (sum & 0xffff) + (sum >> 16);
			w[5] = ~sum;
		} else if (p->flow.family == 6) {
			__u8 tclass = (dscp << 2) | ((ip[1] >> 4) & 0x3);

			ip[0] = (ip[0] & 0xf0) | (tclass >> 4);
			ip[1] = (ip[1] & 0x0f) | ((tclass & 0xf) << 4);
		} else {
			return -1;
		}
		p->dscp = dscp;
		return 0;
	}
#else
	__u8 b[2];
	int err;

	if (bpf_skb_load_bytes(c->ctx, off, b, 2))
		return -1;
	if (p->flow.family == 4) {
		__u8 tos = (dscp << 2) | (b[1] & 0x3);
		__be16 old_w = (__be16)(b[0] | (b[1] << 8)); /* the 16-bit word as it sits in memory */
		__be16 new_w = (__be16)(b[0] | (tos << 8));

		err = bpf_l3_csum_replace(c->ctx, off + 10, old_w, new_w, 2);
		if (err)
			return err;
		err = bpf_skb_store_bytes(c->ctx, off + 1, &tos, 1, 0);
	} else if (p->flow.family == 6) {
		/* version(4) | traffic class(8) | flow label(20): the class straddles bytes 0 and 1 */
		__u8 tclass = (dscp << 2) | (((b[1] >> 4) & 0x3));
		b[0] = (b[0] & 0xf0) | (tclass >> 4);
		b[1] = (b[1] & 0x0f) | ((tclass & 0xf) << 4);
		/* no header checksum, but skb->csum must follow when the device gave CHECKSUM_COMPLETE */
		err = bpf_skb_store_bytes(c->ctx, off, b, 2, BPF_F_RECOMPUTE_CSUM);
	} else {
		return -1;
	}
	if (!err)
		p->dscp = dscp;
	return err;
#endif
}

#ifndef ITM_XDP
/*
 * For a packet a module decapsulated at tc-ingress: back into the device's receive path, where
 * the chain sees the inner packet. Through the hook's GRO path when it has one (a module that is
 * perSegment has), so that the segments of a flow reach the stack merged, as GRO on a NIC would
 * have them; else straight. Returns TC_ACT_REDIRECT: the module returns ITM_REDIRECT.
 */
static __always_inline int itm_redirect_ingress_gro(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct itm_segctl *sc = bpf_map_lookup_elem(&itm_segctl, &zero);

	if (sc && sc->gro_ifindex)
		return bpf_redirect(sc->gro_ifindex, 0);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}
#endif

/* ready-made functions for modules that need fewer than three */
static __always_inline __u32 itm_classify_all(struct itm_ctx *c)
{
	return 1;
}
static __always_inline void itm_log_none(struct itm_ctx *c, __u32 cls)
{
}
static __always_inline int itm_process_none(struct itm_ctx *c, __u32 cls)
{
	return ITM_ACCEPT;
}

/* set by the loader: this instance's slot id */
const volatile __u32 itm_module_id = 0;

/*
 * What a module's entry returns to the dispatcher: its verdict in the low byte (ITM_ACCEPT,
 * ITM_DROP, ITM_REDIRECT, or a negative error), its class above it (255 for any higher class).
 * The dispatcher counts both on the slot's counters (struct itm_mstats_table).
 */
#define ITM_RESULT(cls, verdict) ((int)((((cls) < 255 ? (cls) : 255) << 8) | ((verdict)&0xff)))
#define ITM_RESULT_CLASS(r)	 (((__u32)(r) >> 8) & 0xff)
#define ITM_RESULT_VERDICT(r)	 ((int)(__s8)((r)&0xff))
/* what a slot with no module instance returns */
#define ITM_NO_MODULE (1 << 16)

/*
 * The module's entry: classify → log → process (class 0 skips process), and its class and verdict
 * back to the dispatcher (ITM_RESULT), which counts them and runs the next module of the chain (a
 * drop or a redirect ends it). A global function, not a program: the loader links one renamed
 * copy of the module's object per instance into the hook's program (src/registry/compose.ts),
 * which calls it directly. `pkt` is the packet as the dispatcher parsed it.
 */
#define ITM_MODULE(name, classify_fn, log_fn, process_fn)                                                    \
	__noinline int itm_run_##name(itm_ctx_t *ctx, struct itm_pkt *pkt)                                   \
	{                                                                                                    \
		__u32 cls;                                                                                   \
		int verdict = ITM_ACCEPT;                                                                    \
		struct itm_ctx c;                                                                            \
		if (!pkt)                                                                                    \
			return ITM_RESULT(0, ITM_ACCEPT);                                                    \
		c.ctx = ctx;                                                                                 \
		c.pkt = pkt;                                                                                 \
		cls = classify_fn(&c);                                                                       \
		log_fn(&c, cls);                                                                             \
		if (cls)                                                                                     \
			verdict = process_fn(&c, cls);                                                       \
		return ITM_RESULT(cls, verdict);                                                             \
	}

#endif
