// Where itm keeps things, and the per-device record of what it set up.
//
// The kernel objects are pinned under a bpffs at /run/itm/bpf (docs/kernel.md: a bpffs outside /sys stays
// visible under `ip netns exec`), one tree per network namespace and device:
//   /run/itm/bpf/<netns inode>/<ifindex>/<hook>/{dispatch,link,itm_*,mod-<id>/...}
// The kernel is the truth for what runs; a small JSON record per device (in /run/itm/state) keeps
// what only people need: module names, parameters, interests as typed, load order.
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ItmError } from './errors.js';
import type { Hook, ParamValue } from './module-def.js';
import { BPF_MAP_TYPE, BpfMap, isBpffs, lockFile, mountBpffs, netnsCookie, unlockFile } from './libbpf/index.js';

export const RUN_DIR = process.env.ITM_RUN_DIR ?? '/run/itm';
export const BPFFS = join(RUN_DIR, 'bpf');
export const STATE_DIR = join(RUN_DIR, 'state');
export const LOCK_DIR = join(RUN_DIR, 'lock');

export function netnsId(): string {
  return String(statSync('/proc/self/ns/net').ino);
}

export function hookPinDir(ifindex: number, hook: Hook, ns = netnsId()): string {
  return join(BPFFS, ns, String(ifindex), hook);
}
/** the pins of the module instance with `id` at a hook */
export function modPinDir(ifindex: number, hook: Hook, id: number, ns = netnsId()): string {
  return join(hookPinDir(ifindex, hook, ns), `mod-${id}`);
}
export function devicePinDir(ifindex: number, ns = netnsId()): string {
  return join(BPFFS, ns, String(ifindex));
}
export function nsPinDir(ns = netnsId()): string {
  return join(BPFFS, ns);
}

/** Makes sure the bpffs for itm's pins is mounted where every namespace sees it. */
export function ensureBpffs(): void {
  if (isBpffs(BPFFS)) return;
  let inOwnMountNs = false;
  try {
    inOwnMountNs = readlinkSync('/proc/self/ns/mnt') !== readlinkSync('/proc/1/ns/mnt');
  } catch {
    // no /proc/1 to compare with: assume we are in the main mount namespace
  }
  if (inOwnMountNs) {
    // a mount made here (e.g. under `ip netns exec`) would vanish with this process, and the pins
    // with it: it has to be made in the main mount namespace
    throw new ItmError(
      `no bpffs at ${BPFFS} in this mount namespace`,
      `mount it once from the host's mount namespace: mkdir -p ${BPFFS} && mount -t bpf bpf ${BPFFS} (npm run setup does this)`,
    );
  }
  mountBpffs(BPFFS);
}

/**
 * Pins and records are keyed by the namespace's inode number, which the kernel reuses once a
 * namespace is gone. A marker map in each namespace's pin tree holds the namespace's cookie, which
 * is never reused: a tree whose cookie is not ours belonged to a dead namespace and is removed
 * before anything could adopt it. With `create`, a missing marker is made. Call it holding the
 * namespace's lock (withNamespaceLock).
 */
export function claimNamespace(create: boolean, ns = netnsId()): void {
  const dir = nsPinDir(ns);
  const marker = join(dir, 'netns');
  let cookie: bigint;
  try {
    cookie = netnsCookie();
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOPROTOOPT')
      throw new ItmError('this kernel has no network-namespace cookies (SO_NETNS_COOKIE): itm needs Linux 5.14 or later');
    throw e;
  }
  const key = Buffer.alloc(4);
  if (existsSync(marker)) {
    const m = BpfMap.fromPin(marker);
    const v = m.lookup(key);
    m.close();
    if (v && v.readBigUInt64LE(0) === cookie) return;
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(STATE_DIR, ns), { recursive: true, force: true });
  } else if (existsSync(dir) || existsSync(join(STATE_DIR, ns))) {
    // a tree whose marker was never written cannot be shown to be ours
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(STATE_DIR, ns), { recursive: true, force: true });
  }
  if (!create) return;
  mkdirSync(dir, { recursive: true });
  const m = BpfMap.create({ type: BPF_MAP_TYPE.ARRAY, name: 'itm_netns', keySize: 4, valueSize: 8, maxEntries: 1 });
  try {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(cookie);
    m.update(key, v);
    m.pin(marker);
  } finally {
    m.close();
  }
}

export interface ModuleRecord {
  id: number;
  /** the instance's name, unique on its hook */
  name: string;
  /** the module it is an instance of */
  module: string;
  priority: number;
  seq: number;
  params: Record<string, ParamValue>;
  interest: string;
  loadedAt: string;
  /** a user-space module (hosted by itmd), and the file its declaration is in */
  kind?: 'user';
  source?: string;
  /** the user data path of a kernel module (KernelSide.userDatapath): its object is loaded for its
   * maps, which the host and the control plane in itmd use */
  maps?: true;
  /** it sees a super-packet's segments, not the super-packet (KernelSide.perSegment, or a user
   * module): the hook has a segmentation pair while it is loaded */
  segments?: true;
}

/** whether the instance has its kernel object's maps pinned (a kernel module, or the user data
 * path of one) */
export function hasMaps(m: ModuleRecord): boolean {
  return m.kind !== 'user' || m.maps === true;
}

/** a map's pin name in its instance's directory */
export function pinName(map: string): string {
  return map.replace(/[^A-Za-z0-9_-]/g, '_');
}
export interface HookRecord {
  modules: ModuleRecord[];
  nextSeq: number;
  /** tc hooks: how the dispatcher is attached (src/registry/attach.ts); a hook keeps it until
   * down. A record without it was made by an itm before tcx: cls_bpf. */
  attach?: 'tcx' | 'cls_bpf';
}
export interface DeviceRecord {
  dev: string;
  ifindex: number;
  netns: string;
  /** itm created the clsact qdisc, so `down` may remove it once it holds no filter */
  createdClsact: boolean;
  hooks: Partial<Record<Hook, HookRecord>>;
}

function deviceFile(ifindex: number, ns = netnsId()): string {
  return join(STATE_DIR, ns, `${ifindex}.json`);
}

export function readDevice(ifindex: number, ns = netnsId()): DeviceRecord | undefined {
  const f = deviceFile(ifindex, ns);
  if (!existsSync(f)) return undefined;
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as DeviceRecord;
  } catch {
    return undefined; // a torn or foreign file: `up` rebuilds the record from the kernel
  }
}

/** Written atomically (temporary file, then rename), so a crash leaves the old or the new. */
export function writeDevice(rec: DeviceRecord): void {
  const f = deviceFile(rec.ifindex, rec.netns);
  mkdirSync(join(STATE_DIR, rec.netns), { recursive: true });
  const tmp = `${f}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec, null, 2));
  renameSync(tmp, f);
}

export function removeDevice(ifindex: number, ns = netnsId()): void {
  rmSync(deviceFile(ifindex, ns), { force: true });
}

export function listDeviceRecords(ns = netnsId()): DeviceRecord[] {
  const dir = join(STATE_DIR, ns);
  if (!existsSync(dir)) return [];
  const out: DeviceRecord[] = [];
  for (const f of readdirSync(dir)) {
    const m = /^(\d+)\.json$/.exec(f);
    if (!m) continue;
    const r = readDevice(Number(m[1]), ns);
    if (r) out.push(r);
  }
  return out.sort((a, b) => a.ifindex - b.ifindex);
}

/**
 * Serialises itmctl runs in one network namespace with an flock(2), which the kernel releases if
 * the holder dies. One lock for the namespace, not one per device: commands take well under a
 * second, and a namespace's tree (its marker, its directories) is then only ever changed by one of
 * them. The lock files live beside the records, not among them, so that `down` can remove a
 * namespace's record directory while it holds the lock.
 */
export function withNamespaceLock<T>(fn: () => T, ns = netnsId()): T {
  mkdirSync(LOCK_DIR, { recursive: true });
  const path = join(LOCK_DIR, `${ns}.lock`);
  let fd: number;
  try {
    fd = lockFile(path, 15_000);
  } catch (e) {
    if ((e as { code?: string }).code === 'EAGAIN')
      throw new ItmError(`another itmctl in this network namespace did not finish within 15 s (lock ${path})`);
    throw e;
  }
  try {
    return fn();
  } finally {
    unlockFile(fd);
  }
}
