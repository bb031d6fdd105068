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
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as abi from './abi.js';
import { TC_HANDLE, TC_PRIORITY, ip, linkExists } from './divert.js';
import { ItmError } from './errors.js';
import { BpfMap, BpfProgram, ifIndexToName, ifNameToIndex, tc } from './libbpf/index.js';
import type { Hook } from './module-def.js';

/** the pair's MTU: the largest a veth takes, so no segment of any device is ever too long for it
 * (segmentation itself goes by the packet's gso_size, not by this) */
const SEG_MTU = 65535;

/** The pair's names, from (device, hook) alone; at most 15 characters. */
export function segPairNames(ifindex: number, hook: Hook): { a: string; b: string } {
  const h = hook === 'tc-ingress' ? 'i' : 'e';
  return { a: `itm${ifindex}${h}sa`, b: `itm${ifindex}${h}sb` };
}

/** Every offload that would let A send a GSO packet whole, on: the names as the kernel gives them
 * (they differ between kernels), from `ethtool -k`. */
function segmentationFeaturesOn(dev: string): string[] {
  const r = spawnSync('ethtool', ['-k', dev], { encoding: 'utf8' });
  if (r.error) throw new ItmError(`cannot run ethtool: ${r.error.message} (apt-get install ethtool)`);
  if (r.status !== 0) throw new ItmError(`ethtool -k ${dev}: ${r.stderr.trim()}`);
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*(tx-[\w-]*segmentation|tx-gso-list|tx-gso-partial):\s+on(?!.*\[fixed\])/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
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
  const r = spawnSync('ethtool', ['-K', dev, ...off.flatMap((f) => [f, 'off'])], { encoding: 'utf8' });
  if (r.status !== 0) throw new ItmError(`cannot turn segmentation offloads off on ${dev}: ${r.stderr.trim()}`);
  const left = segmentationFeaturesOn(dev);
  if (left.length) throw new ItmError(`cannot turn ${left.join(', ')} off on ${dev}: super-packets would cross it whole`);
}

function ethtool(dev: string, ...args: string[]): void {
  const r = spawnSync('ethtool', ['-K', dev, ...args], { encoding: 'utf8' });
  if (r.error) throw new ItmError(`cannot run ethtool: ${r.error.message} (apt-get install ethtool)`);
  if (r.status !== 0) throw new ItmError(`ethtool -K ${dev} ${args.join(' ')}: ${r.stderr.trim()}`);
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
  const { a } = segPairNames(ifindex, hook);
  if (linkExists(a)) ip(['link', 'del', a]);
}

/**
 * Makes the hook's pair, unless it is there and intact (one half made, or whose device a person
 * removed, is made again), with the dispatcher's itm_from_seg (pinned as `from_seg` in `hookDir`)
 * on its far end, and points the dispatcher at it. `undo` gets the steps that take back what this
 * call made.
 */
export function ensureSegmenter(ifindex: number, hook: Hook, hookDir: string, map: BpfMap, undo: (what: string, fn: () => void) => void): void {
  if (hook === 'xdp') return; // an XDP frame is one packet on the wire
  if (segmenterIntact(ifindex, hook, map)) return;
  const { a, b } = segPairNames(ifindex, hook);
  removeSegmenter(ifindex, hook, map);
  ip(['link', 'add', a, 'mtu', String(SEG_MTU), 'type', 'veth', 'peer', 'name', b, 'mtu', String(SEG_MTU)]);
  undo(`delete ${a}`, () => removeSegmenter(ifindex, hook, map));
  for (const n of [a, b]) {
    // no addresses and no neighbour discovery: the pair only carries segments
    try { writeFileSync(`/proc/sys/net/ipv6/conf/${n}/disable_ipv6`, '1'); } catch { /* no IPv6 */ }
  }
  noSegmentation(a);
  const gro = hook === 'tc-ingress';
  if (gro) {
    // veth merges what B sends only when B has no TSO and A has GRO (which gives A NAPI)
    noSegmentation(b);
    ethtool(a, 'gro', 'on');
  }
  ip(['link', 'set', a, 'up']);
  ip(['link', 'set', b, 'up']);
  const ia = ifNameToIndex(a);
  const ib = ifNameToIndex(b);
  attach(ib, join(hookDir, 'from_seg'));
  if (gro) attach(ia, join(hookDir, 'from_gro'));
  map.update(abi.u32(0), abi.encode(abi.itm_segctl, { ...segctl(map), ifindex: ia, gro_ifindex: gro ? ib : 0 }));
}
