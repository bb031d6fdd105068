// SPDX-License-Identifier: GPL-2.0
/* The floor of every tc measurement: a program that does nothing but let the packet go. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tc")
int empty(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}
