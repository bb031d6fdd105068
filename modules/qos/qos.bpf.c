// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * qos: size-aware DSCP marking (itmBench's qos_mod, grown PIAS-style to several levels).
 *
 * Every flow starts in the first level (the highest priority) and moves down a level each time its
 * size, in packets or bytes, passes that level's threshold. Sizes are as the flow goes on the wire:
 * a GSO super-packet counts as its segments (c->pkt->segs), with the headers each one repeats
 * (c->pkt->ip_bytes); it is marked as a whole, by where its first segment falls, so a level ends
 * within one super-packet past its threshold. A packet carrying FIN is marked as the
 * first level whatever the flow's size. TCP FIN and RST end a flow's state; a flow idle for longer
 * than the idle timeout has ended too, and its next packet starts a new one; the LRU table, whose
 * size is a parameter, evicts its least recently used flows when full and never fails a packet.
 */
#include <itm/itm.h>

/* an enum, not a #define, so that it reaches BTF and qos.abi.ts */
enum qos_limits {
	QOS_MAX_LEVELS = 8,
};
#define TCP_FIN 0x01
#define TCP_RST 0x04

struct qos_level {
	__u64 threshold; /* the largest size still in this level; ~0 for the last ('*') */
	__u8 dscp;
	__u8 pad[7];
};

/* Not const: controller-update rewrites the thresholds in place, through this module's pinned
 * .bss map, without reloading anything. */
struct qos_config {
	__u32 n_levels;
	__u8 by_bytes; /* size in bytes (IP bytes on the wire) rather than packets */
	__u8 bidir;    /* both directions of a connection are one flow */
	__u8 tcp_seq;  /* TCP bytes by sequence progress: retransmissions add nothing */
	__u8 pad;
	__u64 idle_ns; /* a flow idle this long has ended: its next packet starts a new one */
	struct qos_level levels[QOS_MAX_LEVELS];
};

struct qos_flow_state {
	__u64 packets; /* as they go on the wire: a super-packet's segments */
	__u64 bytes;   /* IP bytes on the wire (or, with tcp_seq, sequence progress) */
	__u64 first_ns;
	__u64 last_ns;
	__u32 seq_end; /* with tcp_seq: the highest sequence number seen, past its data */
	__u8 level;    /* 0-based: the level of the flow's last packet */
	__u8 closing;  /* a FIN was seen: the state goes when `expiry` fires */
	__u8 pad[2];
	struct bpf_timer expiry;
};

/* how long a flow's state outlives its FIN: the last ACKs still belong to it */
#define QOS_CLOSE_NS 1000000000ULL

struct qos_config qos_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct itm_flow);
	__type(value, struct qos_flow_state);
} qos_flows SEC(".maps");

/* anchors the structs in BTF for the TypeScript generator */
const volatile struct qos_abi {
	struct qos_config c;
	struct qos_flow_state s;
	enum qos_limits l;
} qos_abi_anchor;

static int qos_expire(void *map, struct itm_flow *key, struct qos_flow_state *st)
{
	bpf_map_delete_elem(map, key);
	return 0;
}

static __always_inline int addr_less(const __u8 *a, const __u8 *b)
{
	for (int i = 0; i < 16; i++) {
		if (a[i] != b[i])
			return a[i] < b[i];
	}
	return 0;
}

/* the flow's key: the packet's own 5-tuple (looked up where the dispatcher parsed it, with no
 * copy), or with bidir, where the connection's two directions share one key (the lower address
 * first), that of its other direction put in `swapped` */
static __always_inline const struct itm_flow *flow_key(const struct itm_pkt *p, struct itm_flow *swapped)
{
	if (!qos_cfg.bidir)
		return &p->flow;
	if (addr_less(p->flow.daddr, p->flow.saddr) ||
	    (!addr_less(p->flow.saddr, p->flow.daddr) && p->flow.dport < p->flow.sport)) {
		*swapped = p->flow;
		__builtin_memcpy(swapped->saddr, p->flow.daddr, 16);
		__builtin_memcpy(swapped->daddr, p->flow.saddr, 16);
		swapped->sport = p->flow.dport;
		swapped->dport = p->flow.sport;
		return swapped;
	}
	return &p->flow;
}

/* bytes this packet adds to its flow: its IP bytes on the wire (every segment's), or with tcp_seq
 * the TCP sequence progress */
static __always_inline __u64 added_bytes(struct itm_ctx *c, struct qos_flow_state *st, int fresh)
{
	struct itm_pkt *p = c->pkt;
	__u64 ip_len = p->ip_bytes;
	__be32 seq_be;
	__u32 seq, end;

	if (!qos_cfg.tcp_seq || p->flow.proto != IPPROTO_TCP || !(p->flags & ITM_PKT_L4))
		return ip_len;
	if (itm_load_bytes(c, p->l4_off + 4, &seq_be, 4))
		return ip_len;
	seq = bpf_ntohl(seq_be);
	/* SYN and FIN take a sequence number each, as a byte of data would */
	end = seq + (p->len - p->payload_off) + !!(p->tcp_flags & 0x02) + !!(p->tcp_flags & TCP_FIN);
	if (fresh) {
		st->seq_end = end;
		return ip_len;
	}
	if ((__s32)(end - st->seq_end) <= 0)
		return 0; /* nothing new: a retransmission */
	{
		__u32 progress = end - st->seq_end;

		st->seq_end = end;
		return progress;
	}
}

static __always_inline __u32 qos_classify(struct itm_ctx *c)
{
	struct itm_pkt *p = c->pkt;
	struct itm_flow swapped;
	const struct itm_flow *key;
	struct qos_flow_state *st;
	/* CLOCK_MONOTONIC at the last tick: ample for idle timeouts of seconds, and about 2 ns where
	 * bpf_ktime_get_ns costs 27 (a VM's clock source, docs/kernel.md) */
	__u64 now = bpf_ktime_get_coarse_ns(), size, before_p, before_b;
	__u32 n = qos_cfg.n_levels, level = 0;
	int fresh = 0;

	if (n == 0 || n > QOS_MAX_LEVELS)
		return 0;
	key = flow_key(p, &swapped);
	st = bpf_map_lookup_elem(&qos_flows, key);
	if (!st) {
		/* made here, not at the top: a flow's later packets do not pay for zeroing it */
		struct qos_flow_state fresh_st = {.first_ns = now};

		/* a full table evicts its least recently used flow: never an error for the packet */
		bpf_map_update_elem(&qos_flows, key, &fresh_st, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&qos_flows, key);
		if (!st)
			return 1; /* no state to be had: a new flow is short */
		fresh = 1;
	}
	if (st->closing) {
		if (!(p->flow.proto == IPPROTO_TCP && (p->tcp_flags & 0x12) == 0x02))
			return 1; /* the last packets of a finished flow: short, and not counted */
		/* a SYN reusing the 5-tuple: a new connection, not the end of the old one */
		bpf_timer_cancel(&st->expiry);
		st->closing = 0;
		st->packets = 0;
		st->bytes = 0;
		st->first_ns = now;
		fresh = 1;
	}
	if (!fresh && qos_cfg.idle_ns && now - st->last_ns > qos_cfg.idle_ns) {
		/* aged out: the LRU keeps the entry until it needs the room, but the flow is new */
		st->packets = 0;
		st->bytes = 0;
		st->first_ns = now;
		fresh = 1;
	}
	before_p = __sync_fetch_and_add(&st->packets, p->segs ? p->segs : 1);
	before_b = __sync_fetch_and_add(&st->bytes, added_bytes(c, st, fresh));
	st->last_ns = now;
	/* the flow's size at the packet's first segment (or byte): a super-packet goes in the level
	 * that one falls in */
	size = (qos_cfg.by_bytes ? before_b : before_p) + 1;

	if (p->flow.proto == IPPROTO_TCP && (p->tcp_flags & TCP_RST)) {
		bpf_map_delete_elem(&qos_flows, key);
		return 1;
	}
	if (p->flow.proto == IPPROTO_TCP && (p->tcp_flags & TCP_FIN)) {
		/* the flow ends, and a FIN is short whatever the flow's size; its state stays a
		 * moment for the last ACKs, then a timer removes it */
		st->closing = 1;
		/* -EBUSY if a FIN came before: the timer is set up already, and starts anew */
		bpf_timer_init(&st->expiry, &qos_flows, 1 /* CLOCK_MONOTONIC */);
		bpf_timer_set_callback(&st->expiry, qos_expire);
		bpf_timer_start(&st->expiry, QOS_CLOSE_NS, 0);
		return 1;
	}
	for (int i = 0; i < QOS_MAX_LEVELS; i++) {
		if (i >= n - 1 || size <= qos_cfg.levels[i].threshold) {
			level = i;
			break;
		}
	}
	st->level = level;
	return level + 1;
}

static __always_inline int qos_process(struct itm_ctx *c, __u32 cls)
{
	__u32 i = cls - 1;

	if (i >= QOS_MAX_LEVELS)
		return -1;
	return itm_set_dscp(c, qos_cfg.levels[i].dscp);
}

ITM_MODULE(qos, qos_classify, itm_log_none, qos_process)
