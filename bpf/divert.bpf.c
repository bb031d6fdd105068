// SPDX-License-Identifier: GPL-2.0
/*
 * The two ends of a user module's internal veth pair (see struct itm_trailer in itm/abi.h):
 *
 *   device hook --dispatcher: trailer + bpf_redirect--> A ==veth==> B [itm_to_xsk: XDP -> XSK]
 *   module: XSK tx on B ==veth==> A [itm_from_xsk: tc ingress, mark, bpf_redirect] --> device hook
 *
 * At the xdp hook the chain cannot go on at the device (a packet cannot re-enter its XDP), so it
 * goes on on A: the dispatcher's itm_return program runs there as A's XDP, and what it passes,
 * itm_from_xsk puts into the device's receive path:
 *
 *   module: XSK tx on B ==veth==> A [itm_return: XDP, rest of the chain]
 *           [itm_from_xsk: tc ingress, bpf_redirect ingress] --> device's stack
 *
 * B needs native XDP: generic XDP skips packets redirected into the veth (docs/kernel.md).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "itm/abi.h"

#define TC_ACT_SHOT 2

char LICENSE[] SEC("license") = "GPL";

/* set by the loader: the device the pair serves, the only place returning packets may go */
const volatile __u32 itm_target_ifindex = 0;
/* set by the loader for a pair of the xdp hook: packets reach A's tc ingress through itm_return,
 * which has checked the trailer, taken it off and run the rest of the chain */
const volatile __u8 itm_after_xdp = 0;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} itm_xsks SEC(".maps");

enum { D_TO_XSK, D_STRAY_IN, D_RETURNED, D_BAD_RETURN, D_COUNTERS };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, D_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} itm_divert_stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&itm_divert_stats, &what);

	if (c)
		(*c)++;
}

/* the trailer's magic is in the frame's last four bytes; at the xdp hook, in the metadata's */
static __always_inline int has_trailer_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 magic;

	if (itm_after_xdp) {
		struct itm_trailer *t = (void *)(long)ctx->data_meta;

		if ((void *)(t + 1) > data || data + 14 > end)
			return 0;
		return t->magic == ITM_TRAILER_MAGIC;
	}
	if (data + sizeof(struct itm_trailer) + 14 > end)
		return 0;
	if (bpf_xdp_load_bytes(ctx, (end - data) - 4, &magic, 4))
		return 0;
	return magic == ITM_TRAILER_MAGIC;
}

/* on B: diverted packets go to the module's socket; anything else (B's own neighbour discovery,
 * say) is dropped, so the module sees only what the dispatcher sent it */
SEC("xdp")
int itm_to_xsk(struct xdp_md *ctx)
{
	if (!has_trailer_xdp(ctx)) {
		count(D_STRAY_IN);
		return XDP_DROP;
	}
	count(D_TO_XSK);
	/* no socket (its host just died): back to A at once, as if the module had let it go on */
	return bpf_redirect_map(&itm_xsks, 0, XDP_TX);
}

/* on A, tc ingress: what the module sent back goes to its device's hook, where the dispatcher
 * checks the trailer in full */
SEC("tc")
int itm_from_xsk(struct __sk_buff *skb)
{
	struct itm_trailer t;
	__u32 len = skb->len;

	if (itm_after_xdp) {
		count(D_RETURNED);
		skb->mark = 0;
		return bpf_redirect(itm_target_ifindex, BPF_F_INGRESS);
	}
	if (len < sizeof(t) + 14 || len > 0xffff || bpf_skb_load_bytes(skb, len - sizeof(t), &t, sizeof(t)) ||
	    t.magic != ITM_TRAILER_MAGIC || t.ifindex != itm_target_ifindex ||
	    (t.hook != ITM_HOOK_TC_INGRESS && t.hook != ITM_HOOK_TC_EGRESS)) {
		count(D_BAD_RETURN);
		return TC_ACT_SHOT;
	}
	count(D_RETURNED);
	skb->mark = ITM_RETURN_MARK;
	return bpf_redirect(itm_target_ifindex, t.hook == ITM_HOOK_TC_INGRESS ? BPF_F_INGRESS : 0);
}
