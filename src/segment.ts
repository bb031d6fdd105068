// A hook's segmentation pair: where the dispatcher sends a GSO super-packet that a module must see
// as segments (a user module, or a kernel module with `perSegment`), for the kernel to cut it up
// (see struct itm_seg in bpf/include/itm/abi.h for the whole path).
//
//   device hook --dispatcher: mark, bpf_redirect--> A (every segmentation offload off: the kernel
//   cuts the packet as it sends it) ==veth==> B [itm_from_seg: tc ingress] --> device hook
//
// At tc-ingress the pair also runs the other way, with GRO, for packets a module decapsulated
// (itm_redirect_ingress_gro in the SDK, route's decapsulation):
//
//   module at the device's tc-ingress --bpf_redirect--> B (every segmentation offload off, so
//   veth hands what it sends to A's GRO) ==veth==> A (GRO on: a flow's segments merge)
//   [itm_from_gro: tc ingress] --> the device's receive path
//
// One pair per device and hook, made with the first module there that needs it and removed with
// the last (or by `down`).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as abi from './abi.js';
import { TC_HANDLE, TC_PRIORITY, deleteLink, linkExists, linkOp } from './divert.js';
import { ItmError } from './errors.js';
import { type BpfMap, BpfProgram, NotSupportedError, ethtool, ifIndexToName, ifNameToIndex, link, tc } from './libbpf/index.js';
import type { Hook } from './module-def.js';

/** the pair's MTU: the largest a veth takes, so no segment of any device is ever too long for it
 * (segmentation itself goes by the packet's gso_size, not by this) */
const SEG_MTU = 65535;

/** The pair's names, from (device, hook) alone; at most 15 characters. */
export function segPairNames(ifindex: number, hook: Hook): { a: string; b: string } {
  const h = hook === 'tc-ingress' ? 'i' : 'e';
  return { a: `itm${ifindex}${h}sa`, b: `itm${ifindex}${h}sb` };
}

/** the offloads that would let a device send a GSO packet whole, by the kernel's names (which
 * differ between kernels: hence a pattern, not a list) */
const SEGMENTATION = /^(tx-[\w-]*segmentation|tx-gso-list|tx-gso-partial)$/;

/** Every offload that would let A send a GSO packet whole that is on and can be turned off. */
function segmentationFeaturesOn(dev: string): string[] {
  return linkOp(() => ethtool.features(dev))
    .filter((f) => SEGMENTATION.test(f.name) && f.active && !f.fixed)
    .map((f) => f.name);
}

function segctl(map: BpfMap): abi.ItmSegctl {
  return abi.decode<abi.ItmSegctl>(abi.itm_segctl, map.lookup(abi.u32(0))!);
}

const FILTER = { handle: TC_HANDLE, priority: TC_PRIORITY };

/** Whether the pair the hook's itm_segctl names is there, as made (the filters of its ends on). */
export function segmenterIntact(ifindex: number, hook: Hook, map: BpfMap): boolean {
  const { a, b } = segPairNames(ifindex, hook);
  const c = segctl(map);
  if (!c.ifindex || ifIndexToName(c.ifindex) !== a || !linkExists(b)) return false;
  if (tc.query(ifNameToIndex(b), 'ingress', FILTER) === undefined) return false;
  if (hook !== 'tc-ingress') return true;
  return c.gro_ifindex === ifNameToIndex(b) && tc.query(c.ifindex, 'ingress', FILTER) !== undefined;
}

/** Turns off every segmentation offload of `dev`, or says which it cannot. */
function noSegmentation(dev: string): void {
  const off = segmentationFeaturesOn(dev);
  if (!off.length) return;
  try {
    ethtool.setFeatures(dev, Object.fromEntries(off.map((f) => [f, false])));
  } catch (err) {
    // one the kernel kept on is named below, with what would follow from it
    if (!(err instanceof NotSupportedError)) {
      throw new ItmError(
        `cannot turn segmentation offloads off on ${dev}: ${err instanceof Error ? err.message : String(err)}`,
        undefined,
        { cause: err },
      );
    }
  }
  // read back in full: turning one off may have turned on another that depended on it
  const left = segmentationFeaturesOn(dev);
  if (left.length) throw new ItmError(`cannot turn ${left.join(', ')} off on ${dev}: super-packets would cross it whole`);
}

function attach(dev: number, prog: string): void {
  const p = BpfProgram.fromPin(prog);
  try {
    tc.hookCreate(dev, 'ingress');
    tc.attach(dev, 'ingress', p.fd, FILTER);
  } finally {
    p.close();
  }
}

/** Removes the hook's pair, if there is one, and tells the dispatcher there is none. */
export function removeSegmenter(ifindex: number, hook: Hook, map?: BpfMap): void {
  if (map) {
    const c = segctl(map);
    if (c.ifindex || c.gro_ifindex) map.update(abi.u32(0), abi.encode(abi.itm_segctl, { ...c, ifindex: 0, gro_ifindex: 0 }));
  }
  deleteLink(segPairNames(ifindex, hook).a);
}

/**
 * Makes the hook's pair, unless it is there and intact (one half made, or whose device a person
 * removed, is made again), with the dispatcher's itm_from_seg (pinned as `from_seg` in `hookDir`)
 * on its far end, and points the dispatcher at it. `undo` gets the steps that take back what this
 * call made.
 */
export function ensureSegmenter(
  ifindex: number,
  hook: Hook,
  hookDir: string,
  map: BpfMap,
  undo: (what: string, fn: () => void) => void,
): void {
  if (hook === 'xdp') return; // an XDP frame is one packet on the wire
  if (segmenterIntact(ifindex, hook, map)) return;
  const { a, b } = segPairNames(ifindex, hook);
  removeSegmenter(ifindex, hook, map);
  linkOp(() => link.createVeth({ name: a, mtu: SEG_MTU }, { name: b, mtu: SEG_MTU }));
  undo(`delete ${a}`, () => removeSegmenter(ifindex, hook, map));
  for (const n of [a, b]) {
    // no addresses and no neighbour discovery: the pair only carries segments
    try {
      writeFileSync(`/proc/sys/net/ipv6/conf/${n}/disable_ipv6`, '1');
    } catch {
      /* no IPv6 */
    }
  }
  noSegmentation(a);
  const gro = hook === 'tc-ingress';
  if (gro) {
    // veth merges what B sends only when B has no TSO and A has GRO (which gives A NAPI)
    noSegmentation(b);
    linkOp(() => ethtool.setFeatures(a, { 'rx-gro': true })); // `ethtool -K A gro on`
  }
  linkOp(() => link.setUp(a));
  linkOp(() => link.setUp(b));
  const ia = ifNameToIndex(a);
  const ib = ifNameToIndex(b);
  attach(ib, join(hookDir, 'from_seg'));
  if (gro) attach(ia, join(hookDir, 'from_gro'));
  map.update(abi.u32(0), abi.encode(abi.itm_segctl, { ...segctl(map), ifindex: ia, gro_ifindex: gro ? ib : 0 }));
}
