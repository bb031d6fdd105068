// The kernel side of a user-space module's slot: its internal veth pair, the two small programs on
// it (bpf/divert.bpf.c) and its entry in the dispatcher's itm_uctl / itm_uflight maps. See struct
// itm_trailer in bpf/include/itm/abi.h for the path a packet takes.
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as abi from './abi.js';
import { BPF_BUILD } from './catalog.js';
import { ItmError } from './errors.js';
import { BPF_MAP_TYPE, BpfError, BpfMap, BpfObject, BpfProgram, ifNameToIndex, link, tc, xdp } from './libbpf/index.js';
import type { Hook } from './module-def.js';

/** The UMEM frame size of a host's socket and the headroom the kernel leaves in front of a packet:
 * a diverted packet with its trailer must fit in between. */
export const FRAME_SIZE = 4096;
export const FRAME_HEADROOM = 256;
/** Rx ring entries; at most this many of a module's packets are in flight, so the ring cannot
 * overflow (the dispatcher lets the rest bypass the module). */
export const RX_RING = 2048;
export const MAX_IN_FLIGHT = 1024;
export const TRAILER_SIZE = abi.itm_trailer.size;
/** The pair's MTU: a full-size frame plus the trailer must pass the veth's length check, and a
 * veth with native XDP takes at most about 3.5 KB a frame (one page, less headroom and skb info). */
export const PAIR_MTU = 3400;
/** the longest diverted frame, trailer included (the dispatcher lets longer ones bypass) */
export const MAX_FRAME = Math.min(FRAME_SIZE - FRAME_HEADROOM, PAIR_MTU + 14);

/** itm's cls_bpf filter on each clsact direction (the device's hooks, and the ends of its
 * internal pairs); other filters on the device are left alone */
export const TC_HANDLE = 0x1717;
export const TC_PRIORITY = 1;

/** The pair's names: derived from (device, hook, slot), so they can be found and removed from the
 * pins' path alone; at most 15 characters. */
export function pairNames(ifindex: number, hook: Hook, id: number): { a: string; b: string } {
  const h = hook === 'xdp' ? 'x' : hook === 'tc-ingress' ? 'i' : 'e';
  return { a: `itm${ifindex}${h}${id}a`, b: `itm${ifindex}${h}${id}b` };
}

/** A failed device operation's BpfError (which names the device and, when the kernel gave one,
 * its reason) as an ItmError a person can act on; anything else as it is. */
function actionable(err: unknown): unknown {
  return err instanceof BpfError ? new ItmError(err.message.replace(/\s*\n\s*/g, ': '), undefined, { cause: err }) : err;
}

/** Runs a device operation (link, ethtool) of the addon, its failures as ItmErrors. */
export function linkOp<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw actionable(err);
  }
}

export function linkExists(name: string): boolean {
  try {
    ifNameToIndex(name);
    return true;
  } catch {
    return false;
  }
}

/** Deletes the link `name` (a veth takes its peer with it); nothing if there is none. */
export function deleteLink(name: string): void {
  try {
    link.delete(name);
  } catch (err) {
    if (err instanceof BpfError && err.code === 'ENODEV') return; // gone already
    throw actionable(err);
  }
}

/** Removes a slot's pair (and with it its programs); nothing if there is none. */
export function removeDivert(ifindex: number, hook: Hook, id: number): void {
  deleteLink(pairNames(ifindex, hook, id).a);
}

/** Removes every pair of a device (one that is gone): its user modules' and its hooks'
 * segmentation pairs. Best effort: a pair it cannot list or delete stays. */
export function removeDeviceDiverts(ifindex: number): void {
  let links: Array<{ name: string; kind: string | undefined }>;
  try {
    links = link.list();
  } catch {
    return;
  }
  const re = new RegExp(`^itm${ifindex}[iex](\\d+|s)a$`);
  for (const l of links) {
    if (l.kind !== 'veth' || !re.test(l.name)) continue;
    try {
      link.delete(l.name);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
}

const u32 = abi.u32;

/**
 * Creates the slot's pair and programs and pins what the host needs into `modDir` (inside the
 * hook's pin directory): `xsks` (where the host puts its socket) and `ustats` (where it writes its
 * counters). At the xdp hook, A also runs the dispatcher's `return` program, which goes on with
 * the chain (see bpf/divert.bpf.c). `undo` gets the steps that take it all back.
 */
export function createDivert(
  ifindex: number,
  hook: Hook,
  id: number,
  modDir: string,
  uctl: BpfMap,
  failClosed: boolean,
  undo: (what: string, fn: () => void) => void,
): { a: number; b: number } {
  const { a, b } = pairNames(ifindex, hook, id);
  removeDivert(ifindex, hook, id); // a stale one from a crash
  linkOp(() => link.createVeth({ name: a, mtu: PAIR_MTU, txQueues: 1, rxQueues: 1 }, { name: b, mtu: PAIR_MTU, txQueues: 1, rxQueues: 1 }));
  undo(`delete ${a}`, () => removeDivert(ifindex, hook, id));
  for (const n of [a, b]) {
    // no addresses and no neighbour discovery on the pair: it only carries diverted packets
    try {
      writeFileSync(`/proc/sys/net/ipv6/conf/${n}/disable_ipv6`, '1');
    } catch {
      /* no IPv6 */
    }
  }
  linkOp(() => link.setUp(a));
  linkOp(() => link.setUp(b));
  const ia = ifNameToIndex(a);
  const ib = ifNameToIndex(b);
  const path = join(BPF_BUILD, 'divert.bpf.o');
  if (!existsSync(path)) throw new ItmError(`the divert object ${path} is missing — run npm run setup`);
  const obj = BpfObject.open(path);
  try {
    obj.setGlobal('itm_target_ifindex', u32(ifindex));
    if (hook === 'xdp') obj.setGlobal('itm_after_xdp', Buffer.from([1]));
    obj.load();
    for (const [m, pin] of [
      ['itm_xsks', 'xsks'],
      ['itm_divert_stats', 'divert_stats'],
    ] as const) {
      const map = obj.map(m);
      map.pin(join(modDir, pin));
      map.close();
    }
    const toXsk = obj.program('itm_to_xsk');
    const fromXsk = obj.program('itm_from_xsk');
    try {
      // native XDP: generic XDP skips packets redirected into a veth (docs/kernel.md)
      xdp.attach(ib, toXsk.fd, { mode: 'native' });
      if (hook === 'xdp') {
        const ret = BpfProgram.fromPin(join(dirname(modDir), 'return'));
        try {
          xdp.attach(ia, ret.fd, { mode: 'native' });
        } finally {
          ret.close();
        }
      }
      tc.hookCreate(ia, 'ingress');
      tc.attach(ia, 'ingress', fromXsk.fd, { handle: TC_HANDLE, priority: TC_PRIORITY });
    } finally {
      toXsk.close();
      fromXsk.close();
    }
  } finally {
    obj.close();
  }
  const stats = BpfMap.create({ type: BPF_MAP_TYPE.ARRAY, name: 'itm_ustats', keySize: 4, valueSize: abi.itm_ustats.size, maxEntries: 1 });
  try {
    stats.pin(join(modDir, 'ustats'));
  } finally {
    stats.close();
  }
  // bypassed (or, failing closed, dropped) until its host says it serves (deadline 0)
  uctl.update(
    u32(id),
    abi.encode(abi.itm_uctl, {
      deadline_ns: 0n,
      gone: 0n,
      divert_ifindex: ia,
      max_in_flight: MAX_IN_FLIGHT,
      max_len: MAX_FRAME,
      flags: failClosed ? abi.ITM_U_FAIL_CLOSED : 0,
    }),
  );
  undo(`clear the user slot ${id}`, () => uctl.update(u32(id), Buffer.alloc(abi.itm_uctl.size)));
  return { a: ia, b: ib };
}
