// SPDX-License-Identifier: GPL-2.0
/*
 * The floor for qos in this design: one tc program doing by hand, for a packet, the work the
 * dispatcher and qos do together (parse Ethernet/IPv4/IPv6/TCP/UDP once, the flow's LRU entry,
 * its counters, idle and TCP end handling, the level by threshold, the DSCP with its checksum),
 * with no interest check, no chain and no tail calls. Measured against the dispatcher with qos by
 * bench/fastpath.ts (BPF_PROG_TEST_RUN).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "itm/abi.h"

char LICENSE[] SEC("license") = "GPL";

struct flow_state {
	__u64 packets, bytes, first_ns, last_ns;
	__u32 seq_end;
	__u8 level, closing, pad[2];
	struct bpf_timer expiry;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct itm_flow);
	__type(value, struct flow_state);
} flows SEC(".maps");

const volatile __u64 threshold = 100;
const volatile __u64 idle_ns = 30000000000ULL;
const volatile __u8 short_dscp = 46;
const volatile __u8 long_dscp = 0;

static int expire(void *map, struct itm_flow *key, struct flow_state *st)
{
	bpf_map_delete_elem(map, key);
	return 0;
}

SEC("tc")
int qos_handwritten(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct itm_flow key = {};
	struct flow_state *st;
	__u32 l3 = sizeof(*eth), l4;
	__u8 proto, tcp_flags = 0, dscp, b[2];
	__u64 now = bpf_ktime_get_coarse_ns();

	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(0x0800)) {
		struct iphdr *ip = data + l3;

		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return -1;
		proto = ip->protocol;
		key.saddr[10] = key.saddr[11] = key.daddr[10] = key.daddr[11] = 0xff;
		__builtin_memcpy(key.saddr + 12, &ip->saddr, 4);
		__builtin_memcpy(key.daddr + 12, &ip->daddr, 4);
		key.family = 4;
		dscp = ip->tos >> 2;
		l4 = l3 + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(0x86DD)) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > end)
			return -1;
		proto = ip6->nexthdr;
		__builtin_memcpy(key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(key.daddr, &ip6->daddr, 16);
		key.family = 6;
		dscp = ((ip6->priority << 4) | (ip6->flow_lbl[0] >> 4)) >> 2;
		l4 = l3 + sizeof(*ip6);
	} else {
		return -1;
	}
	key.proto = proto;
	if (l4 > 100)
		return -1;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4;

		if ((void *)(th + 1) > end)
			return -1;
		key.sport = bpf_ntohs(th->source);
		key.dport = bpf_ntohs(th->dest);
		tcp_flags = ((__u8 *)th)[13];
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = data + l4;

		if ((void *)(uh + 1) > end)
			return -1;
		key.sport = bpf_ntohs(uh->source);
		key.dport = bpf_ntohs(uh->dest);
	}

	st = bpf_map_lookup_elem(&flows, &key);
	if (!st) {
		struct flow_state fresh = {.first_ns = now};

		bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&flows, &key);
		if (!st)
			return -1;
	} else if (idle_ns && now - st->last_ns > idle_ns) {
		st->packets = 0;
		st->bytes = 0;
		st->first_ns = now;
	}
	__sync_fetch_and_add(&st->packets, 1);
	__sync_fetch_and_add(&st->bytes, skb->len - l3);
	st->last_ns = now;
	if (tcp_flags & 0x04) {
		bpf_map_delete_elem(&flows, &key);
		return -1;
	}
	if (tcp_flags & 0x01) {
		st->closing = 1;
		bpf_timer_init(&st->expiry, &flows, 1);
		bpf_timer_set_callback(&st->expiry, expire);
		bpf_timer_start(&st->expiry, 1000000000ULL, 0);
	}
	st->level = st->packets > threshold;
	{
		__u8 want = st->level ? long_dscp : short_dscp;

		if (want == dscp)
			return -1;
		if (bpf_skb_load_bytes(skb, l3, b, 2))
			return -1;
		if (key.family == 4) {
			__u8 tos = (want << 2) | (b[1] & 3);

			bpf_l3_csum_replace(skb, l3 + 10, (__be16)(b[0] | (b[1] << 8)),
					    (__be16)(b[0] | (tos << 8)), 2);
			bpf_skb_store_bytes(skb, l3 + 1, &tos, 1, 0);
		} else {
			__u8 tc = (want << 2) | ((b[1] >> 4) & 3);

			b[0] = (b[0] & 0xf0) | (tc >> 4);
			b[1] = (b[1] & 0x0f) | ((tc & 0xf) << 4);
			bpf_skb_store_bytes(skb, l3, b, 2, BPF_F_RECOMPUTE_CSUM);
		}
	}
	return -1;
}
