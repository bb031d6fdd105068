/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The dispatcher's globals, set by the loader, and its maps (those it shares with modules are in
 * itm/itm.h).
 */
#ifndef ITM_DISPATCHER_MAPS_H
#define ITM_DISPATCHER_MAPS_H

/* set by the loader before load */
const volatile __u32 itm_hook = ITM_HOOK_TC_EGRESS;
/* for tests: parse every packet the slow way, as if its headers were not linear (the verifier
 * removes the test when it is 0) */
const volatile __u8 itm_force_slow = 0;
/* the device the dispatcher serves (the XDP return program runs on another one) */
const volatile __u32 itm_dev_ifindex = 0;
/* the chain table this program was linked for, as the loader wrote it into itm_chain: read-only data, so every slot's
 * length, interest flags and kind are constants to the verifier, which prunes what a slot cannot
 * do (an interest it has not, the cut and divert of a kernel module, the positions past the
 * chain's end) before the JIT sees it; itm_chain stays the control plane's record of it. Read
 * through volatile only: the compiler must not take the zeros it was built with. */
const volatile struct itm_chain itm_linked = {};

/* the layout version of the tree this dispatcher is pinned in (enum itm_layout), written at load */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} itm_layout SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_CHAIN_VERSIONS);
	__type(key, __u32);
	__type(value, struct itm_chain);
} itm_chain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct itm_ctl);
} itm_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct itm_lpm_key);
	__type(value, __u8);
} itm_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct itm_lpm_key);
	__type(value, __u8);
} itm_dst SEC(".maps");

/* the packet's scratch and the counters, per CPU (struct itm_percpu) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct itm_percpu);
} itm_percpu SEC(".maps");

/* user modules, by slot id (see struct itm_trailer in abi.h) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct itm_uctl);
} itm_uctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct itm_uflight);
} itm_uflight SEC(".maps");

/* the ring of what the segments of the hook's super-packets carry (see struct itm_seg; the pair
 * itself is in itm_segctl, which modules share) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_SEG_RING);
	__type(key, __u32);
	__type(value, struct itm_seg);
} itm_segs SEC(".maps");

/* keeps the ABI enums in BTF for the TypeScript generator */
const volatile struct itm_abi_consts itm_abi_anchor;

/* what each slot's counters were when its instance was loaded (written by the loader only) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ITM_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct itm_mstats);
} itm_mbase SEC(".maps");

#endif
