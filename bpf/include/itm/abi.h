/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * itm ABI: the structures the dispatcher, kernel modules and the TypeScript control plane share.
 *
 * This header is the one source of these layouts. The build compiles it into the dispatcher's BTF
 * and scripts/gen-abi.mjs turns that BTF into src/gen/abi.ts, so the control plane never restates a
 * field offset by hand. Constants are enums (not #defines) so that they reach BTF too.
 */
#ifndef ITM_ABI_H
#define ITM_ABI_H

/*
 * The version of the layout of what itm pins (the dispatcher's maps and programs, the chain table,
 * the trailer, the module ABI), kept in the hook's itm_layout map. Raise it with any change to
 * those; an itm never adopts a tree of another version as its own (src/registry/pins.ts). Version
 * 1: the trees of before it was recorded, which have no itm_layout.
 */
enum itm_layout {
	ITM_LAYOUT_VERSION = 6, /* 6: a slot keeps up to ITM_INLINE_PREFIXES IPv4 prefixes of its own */
};

enum itm_limits {
	/* modules per hook: slots 0..15, each a function of the hook's composed program */
	ITM_MAX_SLOTS = 16,
	/* xdp: prog-array index of the composed program's return entry (see itm_return) */
	ITM_RETURN_IDX = 0,
	ITM_PROGS_SIZE = 1,
	ITM_MAX_PORT_RANGES = 8,
	/* a slot whose src (or dst) prefixes are all IPv4 and at most this many has them in the slot
	 * itself, matched by a mask each; any other list is looked up in the itm_src/itm_dst tries */
	ITM_INLINE_PREFIXES = 4,
	/* classes 0..6 are counted one by one; 7 counts class 7 and every higher class */
	ITM_CLASS_BUCKETS = 8,
	/* two chain tables: one live, one being written (see struct itm_ctl) */
	ITM_CHAIN_VERSIONS = 2,
	ITM_MAX_IPV6_EXT = 6,
	/* the skb mark of a packet coming back from a user module (see struct itm_trailer) */
	ITM_RETURN_MARK = 0x17170001,
	/* the last four bytes of a trailer, "ITMT" on the wire */
	ITM_TRAILER_MAGIC = 0x544d5449,
	/* the skb marks of the segments of a super-packet on their way through the hook's
	 * segmentation pair: ITM_SEG_MARK | the low ITM_SEG_MARK_BITS bits of the number of its
	 * entry (see struct itm_seg) */
	ITM_SEG_MARK = 0x17200000,
	ITM_SEG_MARK_BITS = 20,
	/* entries of the itm_segs ring (a power of two) */
	ITM_SEG_RING = 4096,
};

enum itm_hook {
	ITM_HOOK_TC_INGRESS = 0,
	ITM_HOOK_TC_EGRESS = 1,
	ITM_HOOK_XDP = 2,
};

/* which parts of a slot's interest apply; a clear bit means "any" */
enum itm_interest_flags {
	ITM_I_PROTO = 1 << 0,
	ITM_I_SRC = 1 << 1,
	ITM_I_DST = 1 << 2,
	ITM_I_SPORT = 1 << 3,
	ITM_I_DPORT = 1 << 4,
	ITM_I_INDEV = 1 << 5,
	ITM_I_OUTDEV = 1 << 6,
	ITM_I_LOCAL = 1 << 7,	  /* egress: sent by this host; ingress: addressed to this host */
	ITM_I_FORWARDED = 1 << 8, /* the opposite of local; both bits set means either */
	ITM_I_IPV4 = 1 << 9,	  /* family filter; neither bit means both families */
	ITM_I_IPV6 = 1 << 10,
};

enum itm_verdict {
	ITM_ACCEPT = 0,
	ITM_DROP = 1,
	/* the module has sent the packet on itself (bpf_redirect, bpf_redirect_neigh) after changing
	 * its headers, so the parse no longer holds: the chain ends here, later modules skip it */
	ITM_REDIRECT = 2,
};

struct itm_port_range {
	__u16 lo;
	__u16 hi;
};

/* an IPv4 prefix as the packet's bytes are: the address masked, and the mask (network order) */
struct itm_prefix4 {
	__u32 addr;
	__u32 mask;
};

/* one module's place in a hook's chain, with its interest (every prefix is in the LPM tries too) */
struct itm_slot {
	__u32 id;	 /* module instance: its index in the prog array and in the stats map */
	__u32 flags;	 /* enum itm_interest_flags */
	__u64 protos[4]; /* bitmap of IP protocol numbers */
	__u32 indev;	 /* ifindex, when ITM_I_INDEV */
	__u32 outdev;	 /* ifindex, when ITM_I_OUTDEV */
	__u8 n_sport;
	__u8 n_dport;
	__u8 user; /* 1: a user-space module, reached over AF_XDP (see struct itm_uctl) */
	/* 1: the module must see each packet as it goes on the wire: a GSO super-packet is cut into
	 * its segments before it reaches the module (see struct itm_seg); user modules always are */
	__u8 segments;
	/* >0: the slot's src (dst) prefixes, all IPv4, are the first n of src4 (dst4), and the tries
	 * are not looked at for it (they hold the same prefixes, for itmctl explain) */
	__u8 n_src4;
	__u8 n_dst4;
	__u8 pad[2];
	struct itm_port_range sport[ITM_MAX_PORT_RANGES];
	struct itm_port_range dport[ITM_MAX_PORT_RANGES];
	struct itm_prefix4 src4[ITM_INLINE_PREFIXES];
	struct itm_prefix4 dst4[ITM_INLINE_PREFIXES];
};

struct itm_chain {
	__u32 n;
	__u32 pad;
	struct itm_slot slots[ITM_MAX_SLOTS];
};

/* Which chain table packets use. A change writes the idle table in full, then flips `active`; a
 * packet reads `active` once and keeps to that table through its whole chain (and back from a user
 * module, by its trailer's position), so it sees the old chain or the new one, never a mix. */
struct itm_ctl {
	__u32 active;
	__u32 generation;
	/* random, set when the hook is set up: a returning packet's trailer must carry it */
	__u32 secret;
};

/* key of the prefix tries: the module id and the family are part of the key, so one trie serves
 * every module of a hook and an IPv6 prefix never matches an IPv4 packet; IPv4 prefixes are stored
 * IPv4-mapped (::ffff:a.b.c.d): prefixlen = 32 + 8 + 96 + len for IPv4, 32 + 8 + len for IPv6 */
struct itm_lpm_key {
	__u32 prefixlen;
	__u32 id;
	__u8 family;
	__u8 addr[16];
};

/* the 5-tuple; IPv4 addresses are IPv4-mapped IPv6 so one key type serves both families */
struct itm_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host byte order; 0 where the protocol has no ports */
	__u16 dport;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u16 pad;
};

enum itm_pkt_flags {
	ITM_PKT_FRAGMENT = 1 << 0, /* a non-first fragment: no L4 header, ports are 0 */
	ITM_PKT_L4 = 1 << 1,	   /* the L4 header (TCP/UDP/ICMP) was parsed */
	ITM_PKT_VLAN = 1 << 2,
	ITM_PKT_IP_OPTIONS = 1 << 3,
	ITM_PKT_IPV6_EXT = 1 << 4,
	ITM_PKT_PORTS = 1 << 5,	  /* sport and dport are set (TCP, UDP, SCTP) */
	ITM_PKT_SEGMENT = 1 << 6, /* a segment the dispatcher cut from a super-packet (struct itm_seg) */
};

/* the packet as the dispatcher parsed it, once, for every module of the chain */
struct itm_pkt {
	struct itm_flow flow;
	__u16 l3_off; /* from the start of the packet (the Ethernet header) */
	__u16 l4_off;
	__u16 payload_off;
	__u16 vlan_id;
	__u32 len;	       /* skb->len */
	__u32 ifindex;	       /* the device the hook is on */
	__u32 ingress_ifindex; /* where it came in; 0 for packets sent by this host */
	__u8 hook;	       /* enum itm_hook */
	__u8 dscp;
	__u8 ecn;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 flags; /* enum itm_pkt_flags */
	__u8 local; /* 0 unknown yet, 1 local, 2 forwarded */
	/* the packets it goes on the wire as: 1, or the segments of a GSO super-packet (a host's own
	 * TCP at tc-egress with TSO, forwarded TCP after GRO, whatever a veth carried across whole) */
	__u16 segs;
	__u16 pad;
	/* the bytes its segments carry from their IP headers on, in all: its IP length, plus the
	 * headers (IP, extension headers, L4) each further segment repeats */
	__u32 ip_bytes;
};

/* per-packet state that travels along the chain, in a per-CPU map: a chain runs to completion
 * on one CPU with no other chain interleaved */
struct itm_scratch {
	__u32 unused; /* (was the chain table: each program now has its own, itm_linked) */
	__u32 pos;    /* the slot running now */
	struct itm_pkt pkt;
};

/* per module instance (per-CPU, summed by the control plane) */
/* A slot's counters. The dispatcher counts a packet at a kernel module's slot once: in `skipped`
 * (not in its interest) or in its class; a user module's in `skipped` or `matched`. What reached
 * the slot and what matched follow (HookPins.mstats). */
struct itm_mstats {
	__u64 skipped; /* reached the module's slot, not its interest */
	__u64 matched; /* matched its interest: user modules (a kernel module's are its classes) */
	__u64 dropped;
	__u64 errors; /* process() failed, or the module was missing: the packet went on */
	__u64 classes[ITM_CLASS_BUCKETS];
	/* user modules: packets that went past the module instead of through it */
	__u64 bypass_down;   /* its host is not running, or stopped renewing its deadline */
	__u64 bypass_behind; /* too many of its packets in flight */
	__u64 bypass_size;   /* too long for a frame (jumbo frames; a super-packet that could not be cut) */
	__u64 diverted;
};

/* Every slot's counters, in itm_percpu; a slot's read is what it counted since its instance was
 * loaded: its entry here less its entry in itm_mbase. */
struct itm_mstats_table {
	struct itm_mstats slots[ITM_MAX_SLOTS];
};

/*
 * User-space modules. The dispatcher diverts a matching packet to the module's internal veth pair:
 * it appends a trailer, redirects the packet into one end of the pair, and an XDP program on the
 * other end hands it to the module's AF_XDP socket. The module sends it back (trailer kept) on that
 * socket; the tc program on the first end marks it ITM_RETURN_MARK and redirects it to the device
 * it came from, where the dispatcher of its hook checks the trailer, takes it off, restores what
 * AF_XDP does not carry (mark, priority, VLAN tag), parses the packet again and runs the chain on
 * from the module's slot.
 */
enum itm_trailer_flags {
	ITM_T_CSUM_PARTIAL = 1 << 0, /* sent by this host: the L4 checksum is left for offload */
	ITM_T_VLAN = 1 << 1,	     /* the packet had a VLAN tag in its metadata */
	/* set by the module's host (tc hooks only): the module has rewritten the packet's headers
	 * (encapsulated it, say) and sends it out of the device in `iif` (which the host overwrites:
	 * the trailer stays 32 bytes, the most XDP metadata older kernels take), next hop found by the
	 * neighbour subsystem (bpf_redirect_neigh); the chain ends there, as for ITM_REDIRECT */
	ITM_T_REDIRECT = 1 << 2,
};

struct itm_trailer {
	__u32 ifindex; /* the device of the hook */
	__u32 iif;     /* skb->ingress_ifindex at the divert (0: sent by this host); with
				 * ITM_T_REDIRECT, the device to send the packet out of */
	__u32 mark;
	__u32 priority;
	__u16 vlan_tci;
	__u16 vlan_proto; /* network byte order */
	__u8 hook;	  /* enum itm_hook */
	__u8 id;	  /* the module's slot id */
	__u8 pos;	  /* its position in the chain at the divert */
	__u8 flags;	  /* enum itm_trailer_flags */
	__u32 secret;	  /* the dispatcher's, so a trailer cannot be forged from outside */
	__u32 magic;	  /* ITM_TRAILER_MAGIC, the last bytes of the frame */
};

/* written by the host of a user module (one writer); read by the dispatcher */
struct itm_uctl {
	__u64 deadline_ns;    /* CLOCK_MONOTONIC: packets bypass the module after it (host gone or stuck) */
	__u64 gone;	      /* diverted packets that will not come back (dropped by the module, lost) */
	__u32 divert_ifindex; /* the end of the module's veth pair that packets are redirected into */
	__u32 max_in_flight;  /* more diverted and not back: the module is behind, packets bypass it */
	__u32 max_len;	      /* longer packets (with the trailer) do not fit a frame: they bypass */
	__u32 flags;	      /* enum itm_uctl_flags */
};

enum itm_uctl_flags {
	/* what cannot reach the module (host not serving, behind, too long) is dropped, not let go
	 * past it: for a module whose packets must not leave unprocessed (route's user data path,
	 * which would send them out unencapsulated) */
	ITM_U_FAIL_CLOSED = 1 << 0,
};

/* written by the kernel only, atomically: in flight = sent - back - gone */
struct itm_uflight {
	__u64 sent;
	__u64 back;
};

/* what the host of a user module counts (one writer, the host; read by itmctl list) */
struct itm_ustats {
	__u64 received;
	__u64 accepted;
	__u64 modified;
	__u64 dropped;
	__u64 errors;	 /* classify/log/process threw: the packet went on unchanged */
	__u64 malformed; /* process left a packet that cannot be sent: dropped */
	__u64 classes[ITM_CLASS_BUCKETS];
};

/* per dispatcher (per-CPU) */
struct itm_dstats {
	__u64 packets;
	__u64 parsed;
	__u64 non_ip;	       /* ARP, LLDP, ...: passed untouched */
	__u64 truncated;       /* shorter than its headers say: passed untouched */
	__u64 malformed;       /* bad version, header length, ...: passed untouched */
	__u64 fragments;       /* non-first fragments (parsed without ports) */
	__u64 unsupported;     /* e.g. too many IPv6 extension headers: passed untouched */
	__u64 chain_errors;    /* a slot the hook's program has no module for */
	__u64 returned;	       /* came back from a user module */
	__u64 bad_returns;     /* marked as returning, with no valid trailer (or segment entry):
				 * treated as new packets */
	__u64 segmented;       /* super-packets sent through the segmentation pair */
	__u64 segments;	       /* their segments, back at the hook */
	__u64 seg_unavailable; /* super-packets a module needed cut, with no pair to cut them */
};

/* What the dispatcher keeps per CPU, in the one value of itm_percpu, looked up once a packet: the
 * packet's scratch, the hook's counters and every slot's. */
struct itm_percpu {
	struct itm_scratch scratch;
	struct itm_dstats dstats;
	struct itm_mstats_table mstats;
};

/*
 * Segmentation. A module that must see every packet as it goes on the wire (itm_slot.segments:
 * route, which tags each one, and every user module, whose frames hold one packet) would get a
 * GSO super-packet whole (a host's TCP with TSO, forwarded TCP after GRO, up to 64 KB). Such a
 * packet is instead redirected into the hook's segmentation pair, a veth pair whose sending end
 * has every segmentation offload off, so the kernel cuts it into its segments as it sends it
 * (the same software GSO a NIC without TSO gets). Its skb mark, which each segment inherits,
 * names its entry in the itm_segs ring. At the pair's far end, tc ingress (itm_from_seg) sends
 * each segment back to the device's hook, where the dispatcher finds the entry, restores the
 * mark and priority, and runs the chain on from the module's slot: the modules before it saw the
 * super-packet once (counting its segs), the module and the ones after see every segment.
 */
struct itm_segctl {
	__u32 ifindex; /* the pair's sending end; 0: no pair (super-packets go on whole) */
	__u32 next;    /* the next entry to take, by atomic add */
	/* at tc-ingress, the pair also runs the other way, with GRO: a packet a module decapsulated
	 * and sends into this end (itm_redirect_ingress_gro) comes out of the other merged with the
	 * rest of its flow, and itm_from_gro puts it into the device's receive path; 0: none */
	__u32 gro_ifindex;
	__u32 pad;
};

struct itm_seg {
	__u32 mark;	 /* the mark its segments carry: 0 for none yet */
	__u32 orig_mark; /* the packet's own mark and priority, put back on every segment */
	__u32 priority;
	__u32 iif; /* skb->ingress_ifindex at the cut (0: sent by this host) */
	__u8 id;   /* the slot it resumes at */
	__u8 pos;  /* and that slot's position at the cut */
	__u8 pad[2];
};

/* anchors the enums above in BTF, for the TypeScript generator */
struct itm_abi_consts {
	enum itm_layout layout;
	enum itm_limits limits;
	enum itm_hook hook;
	enum itm_interest_flags interest;
	enum itm_verdict verdict;
	enum itm_pkt_flags pkt_flags;
	enum itm_trailer_flags trailer_flags;
	enum itm_uctl_flags uctl_flags;
	struct itm_trailer trailer;
	struct itm_uctl uctl;
	struct itm_uflight uflight;
	struct itm_ustats ustats;
	struct itm_segctl segctl;
	struct itm_seg seg;
};

#endif
