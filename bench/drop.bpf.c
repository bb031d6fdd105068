// SPDX-License-Identifier: GPL-2.0
/* The benchmarks' sink: drops UDP over IPv4 at tc ingress of the receiving device, which counts it
 * (rx_packets) first, so no socket sets the pace; ARP and the rest go on. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tc")
int drop_udp(struct __sk_buff *skb)
{
	__u8 proto;

	if (skb->protocol != bpf_htons(0x0800) || bpf_skb_load_bytes(skb, 14 + 9, &proto, 1))
		return -1; /* TC_ACT_UNSPEC */
	return proto == 17 ? 2 /* TC_ACT_SHOT */ : -1;
}
