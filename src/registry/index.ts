// The registry: sets devices up and down, loads and unloads modules, and reports what runs where.
// Every operation is transactional (a failure undoes the steps already taken) and every change of
// a chain is one atomic switch for packets in flight (see struct itm_ctl in bpf/include/itm/abi.h).
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as abi from '../abi.js';
import { ItmError } from '../errors.js';
import { BpfError, BpfMap, BpfObject, BpfProgram, ifIndexToName, ifNameToIndex, tc, waitForRunningPrograms, xdp } from '../libbpf/index.js';
import { dispatcherObjectPath, findModule, kernelObjectPath, resolveModule } from '../catalog.js';
import { TC_HANDLE, TC_PRIORITY, createDivert, removeDeviceDiverts, removeDivert } from '../divert.js';
import { ensureSegmenter, removeSegmenter, segmenterIntact } from '../segment.js';
import { ModuleInstance, instanceDir } from '../instance.js';
import { encodeSlot, formatInterest, lpmKey, mismatch, parseInterest, type FlowQuery, type Interest } from '../interest.js';
import { DEFAULT_HOOKS, HOOKS, isIngress, isUserModule, kernelConfig, validateParams, type FlowRow, type Hook, type KernelConfig, type ModuleDef, type ParamValue, type PeriodicContext } from '../module-def.js';
import {
  claimNamespace, devicePinDir, ensureBpffs, hasMaps, hookPinDir, modPinDir, pinName, nsPinDir, STATE_DIR, listDeviceRecords, netnsId, readDevice, removeDevice, withNamespaceLock, writeDevice,
  type DeviceRecord, type HookRecord, type ModuleRecord,
} from '../state.js';
import { log } from '../log.js';

export const DEFAULT_PRIORITY = 50;
/** the interest of a module found in the kernel with no record of how it was loaded */
const ADOPTED = '?';

const SHARED_MAPS = ['itm_progs', 'itm_scratch', 'itm_mstats', 'itm_segctl'] as const;
const DISPATCHER_MAPS = [...SHARED_MAPS, 'itm_chain', 'itm_ctl', 'itm_src', 'itm_dst', 'itm_dstats', 'itm_uctl', 'itm_uflight', 'itm_segs'] as const;
type DispatcherMap = (typeof DISPATCHER_MAPS)[number];

const tcPoint = (hook: Hook) => (hook === 'tc-ingress' ? 'ingress' : 'egress');
const hookId = (hook: Hook) =>
  hook === 'xdp' ? abi.ITM_HOOK_XDP : hook === 'tc-ingress' ? abi.ITM_HOOK_TC_INGRESS : abi.ITM_HOOK_TC_EGRESS;

export function resolveDevice(dev: string, action: string): number {
  try {
    return ifNameToIndex(dev);
  } catch (e) {
    if (e instanceof BpfError && e.code === 'ENODEV') throw new ItmError(`cannot ${action} ${dev}: no such device`);
    throw e;
  }
}

/** A hook's pinned dispatcher: its programs and maps, opened from bpffs. */
class HookPins {
  private constructor(readonly dir: string, readonly dispatch: BpfProgram, readonly maps: Record<DispatcherMap, BpfMap>) {}

  static open(dir: string): HookPins | undefined {
    if (!existsSync(join(dir, 'dispatch')) || !existsSync(join(dir, 'resume'))) return undefined;
    const opened: BpfMap[] = [];
    try {
      const maps = {} as Record<DispatcherMap, BpfMap>;
      for (const m of DISPATCHER_MAPS) {
        const map = BpfMap.fromPin(join(dir, m));
        opened.push(map);
        maps[m] = map;
      }
      return new HookPins(dir, BpfProgram.fromPin(join(dir, 'dispatch')), maps);
    } catch (e) {
      for (const m of opened) m.close();
      if (e instanceof BpfError && e.code === 'ENOENT') return undefined; // half made: `up` rebuilds it
      throw e;
    }
  }

  close(): void {
    this.dispatch.close();
    for (const m of Object.values(this.maps)) m.close();
  }

  chain(): abi.ItmSlot[] {
    const ctl = abi.decode<abi.ItmCtl>(abi.itm_ctl, this.maps.itm_ctl.lookup(u32(0))!);
    const c = abi.decode<abi.ItmChain>(abi.itm_chain, this.maps.itm_chain.lookup(u32(ctl.active & 1))!);
    return c.slots.slice(0, c.n);
  }

  /** Writes the idle chain table in full, then switches packets to it in one write. */
  setChain(slots: abi.ItmSlot[]): void {
    if (slots.length > abi.ITM_MAX_SLOTS) throw new ItmError(`at most ${abi.ITM_MAX_SLOTS} modules per hook`);
    const ctl = abi.decode<abi.ItmCtl>(abi.itm_ctl, this.maps.itm_ctl.lookup(u32(0))!);
    const idle = (ctl.active & 1) ^ 1;
    this.maps.itm_chain.update(u32(idle), abi.encode(abi.itm_chain, { n: slots.length, slots }));
    this.maps.itm_ctl.update(u32(0), abi.encode(abi.itm_ctl, { active: idle, generation: ctl.generation + 1 }));
    // packets already on the table just left may still read it: wait for them before anything
    // (the next change, or the removal of a module) touches what they could reach
    waitForRunningPrograms();
  }

  mstats(id: number): abi.ItmMstats {
    return abi.sumPerCpu<abi.ItmMstats>(abi.itm_mstats, this.maps.itm_mstats, u32(id));
  }
  dstats(): abi.ItmDstats {
    return abi.sumPerCpu<abi.ItmDstats>(abi.itm_dstats, this.maps.itm_dstats, u32(0));
  }
}

const u32 = abi.u32;

/** Undo steps, run in reverse when a transaction fails. */
class Undo {
  private steps: Array<[string, () => void]> = [];
  add(what: string, fn: () => void): void {
    this.steps.push([what, fn]);
  }
  /** Runs the steps, latest first; returns `e`, with what could not be undone said in it. */
  rollback(e: unknown): unknown {
    const failed: string[] = [];
    for (const [what, fn] of this.steps.reverse()) {
      try {
        fn();
      } catch (err) {
        log.debug({ err }, `undo: ${what} failed`);
        failed.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.steps = [];
    if (!failed.length) return e;
    const msg = e instanceof Error ? e.message : String(e);
    return new ItmError(`${msg}; and undoing it failed (${failed.join('; ')}): run itmctl up, or down, on the device to repair`, undefined, { cause: e });
  }
}

/** A module map's pin file: bpffs refuses dots, which libbpf's internal maps have (qos.bss). */
function moduleProgName(name: string): string {
  return `itm_module_${name}`;
}

/** The bpffs is there, and this namespace's tree is ours (not a dead namespace's, see claimNamespace). */
function enterNamespace(create: boolean): void {
  ensureBpffs();
  claimNamespace(create);
  collectGoneDevices();
}

/** The pins and records of devices that no longer exist (deleted, or moved to another namespace):
 * their filters went with them, so nothing of theirs runs. */
function collectGoneDevices(): void {
  const ids = new Set(listDeviceRecords().map((r) => r.ifindex));
  if (existsSync(nsPinDir())) for (const e of readdirSync(nsPinDir())) if (/^\d+$/.test(e)) ids.add(Number(e));
  for (const i of ids) {
    if (ifIndexToName(i) !== undefined) continue;
    log.info(`device ${i} is gone: removing what itm kept for it`);
    rmSync(devicePinDir(i), { recursive: true, force: true });
    removeDeviceDiverts(i);
    removeDevice(i);
    tidy(i);
  }
}

/** The device and hook of a hook's pin directory (.../<ifindex>/<hook>). */
function hookOfDir(dir: string): { ifindex: number; hook: Hook } {
  return { ifindex: Number(basename(dirname(dir))), hook: basename(dir) as Hook };
}

/** Removes a module's traces from the hook's shared maps: its slot, its prefixes, and a user
 * module's veth pair. */
function purgeModule(pins: HookPins, id: number): void {
  pins.maps.itm_progs.delete(u32(id));
  pins.maps.itm_uctl.update(u32(id), Buffer.alloc(pins.maps.itm_uctl.valueSize));
  const { ifindex, hook } = hookOfDir(pins.dir);
  removeDivert(ifindex, hook, id);
  for (const which of ['itm_src', 'itm_dst'] as const) {
    for (const k of pins.maps[which].keys()) {
      if (abi.decode<abi.ItmLpmKey>(abi.itm_lpm_key, k).id === id) pins.maps[which].delete(k);
    }
  }
  rmSync(instanceDir(pins.dir, id), { recursive: true, force: true });
}

/** Removes the directories of a device and of the namespace once nothing of itm is left in them
 * (the namespace's marker aside). */
function tidy(ifindex: number): void {
  try { rmdirSync(devicePinDir(ifindex)); } catch { /* gone already, or hooks are set up */ }
  try {
    if (readdirSync(nsPinDir()).every((e) => e === 'netns')) rmSync(nsPinDir(), { recursive: true, force: true });
  } catch { /* no tree */ }
  try { rmdirSync(join(STATE_DIR, netnsId())); } catch { /* other devices are set up */ }
}

/** itm parses Ethernet frames: a device whose frames start elsewhere (tun, wireguard, loopback)
 * would have its packets misread. */
function requireEthernet(dev: string): void {
  const r = spawnSync('ip', ['-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  if (r.error) throw new ItmError(`cannot run ip: ${r.error.message}`);
  let type: string | undefined;
  try {
    type = (JSON.parse(r.stdout) as Array<{ link_type?: string }>)[0]?.link_type;
  } catch { /* fall through */ }
  if (type !== 'ether') throw new ItmError(`cannot set up ${dev}: it is not an Ethernet device (link type ${type ?? 'unknown'}); itm parses Ethernet frames`);
}

// ---------------------------------------------------------------- up / down

export type UpOutcome = 'created' | 'adopted' | 'repaired';

function attachedProgId(ifindex: number, hook: Hook): number | undefined {
  if (hook === 'xdp') return xdp.query(ifindex)?.progId;
  return tc.query(ifindex, tcPoint(hook), { handle: TC_HANDLE, priority: TC_PRIORITY })?.progId;
}

/** How the xdp dispatcher is attached: native where the driver has it, else generic. */
function xdpMode(ifindex: number): string | undefined {
  return xdp.query(ifindex)?.mode;
}

/** Attaches the xdp dispatcher: native mode if the driver supports it, generic otherwise. */
function attachXdp(ifindex: number, fd: number, replace: boolean): void {
  try {
    xdp.attach(ifindex, fd, { mode: 'native', replace });
  } catch (e) {
    if (!(e instanceof BpfError) || !['EOPNOTSUPP', 'EINVAL', 'ENOTSUP'].includes(e.code ?? '')) throw e;
    log.info({ err: e }, 'native XDP refused, attaching in generic (skb) mode');
    xdp.attach(ifindex, fd, { mode: 'generic', replace });
  }
}

/** Loads and pins a fresh dispatcher for one hook (into a temporary dir, renamed when complete). */
function createDispatcher(ifindex: number, hook: Hook, undo: Undo): HookPins {
  const dir = hookPinDir(ifindex, hook);
  const tmp = `${dir}-tmp-${process.pid}`; // bpffs refuses names with a dot
  // half-made trees from a crash: the hook's own, and temporary ones of any earlier run
  rmSync(dir, { recursive: true, force: true });
  const parent = join(dir, '..');
  if (existsSync(parent)) {
    for (const e of readdirSync(parent)) if (e.startsWith(`${hook}-tmp-`)) rmSync(join(parent, e), { recursive: true, force: true });
  }
  mkdirSync(tmp, { recursive: true });
  undo.add(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  const obj = BpfObject.open(dispatcherObjectPath(hook));
  try {
    obj.setGlobal('itm_hook', u32(hookId(hook)));
    obj.setGlobal('itm_dev_ifindex', u32(ifindex));
    // a returning packet's trailer must carry it (see struct itm_trailer)
    obj.setGlobal('itm_secret', randomBytes(4));
    // a test knob: the slow parse path (headers outside the skb's linear part) for every packet
    if (process.env.ITM_FORCE_SLOW_PARSE === '1') obj.setGlobal('itm_force_slow', Buffer.from([1]));
    obj.load();
    for (const m of DISPATCHER_MAPS) {
      const map = obj.map(m);
      map.pin(join(tmp, m));
      map.close();
    }
    const dispatch = obj.program('itm_dispatch');
    const resume = obj.program('itm_resume');
    dispatch.pin(join(tmp, 'dispatch'));
    resume.pin(join(tmp, 'resume'));
    // xdp: runs on the pairs of the hook's user modules (see bpf/divert.bpf.c); tc: on the far
    // end of the hook's segmentation pair (src/segment.ts)
    const extra = hook === 'xdp' ? [['itm_return', 'return']] : [['itm_from_seg', 'from_seg'], ...(hook === 'tc-ingress' ? [['itm_from_gro', 'from_gro']] : [])];
    for (const [prog, pin] of extra) {
      const ep = obj.program(prog!);
      ep.pin(join(tmp, pin!));
      ep.close();
    }
    const progs = BpfMap.fromPin(join(tmp, 'itm_progs'));
    progs.update(u32(abi.ITM_RESUME_IDX), u32(resume.fd));
    progs.close();
    dispatch.close();
    resume.close();
  } finally {
    obj.close();
  }
  mkdirSync(join(dir, '..'), { recursive: true });
  renameSync(tmp, dir);
  undo.add(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return HookPins.open(dir)!;
}

function upLocked(dev: string, ifindex: number, hooks: readonly Hook[], undo: Undo): Record<string, UpOutcome> {
  enterNamespace(true);
  requireEthernet(dev);
  const ns = netnsId();
  const rec: DeviceRecord = readDevice(ifindex) ?? { dev, ifindex, netns: ns, createdClsact: false, hooks: {} };
  rec.dev = dev;
  const out: Record<string, UpOutcome> = {};
  for (const hook of hooks) {
    let pins = HookPins.open(hookPinDir(ifindex, hook));
    let outcome: UpOutcome = 'adopted';
    if (!pins) {
      pins = createDispatcher(ifindex, hook, undo);
      outcome = rec.hooks[hook] ? 'repaired' : 'created';
      rec.hooks[hook] = { modules: [], nextSeq: 1 };
    }
    try {
      const hr = (rec.hooks[hook] ??= { modules: [], nextSeq: 1 });
      reconcileRecord(hr, pins);
      // a segmentation pair someone removed would swallow the super-packets sent into it
      if (hook !== 'xdp' && needsSegmenter(hr) && !segmenterIntact(ifindex, hook, pins.maps.itm_segctl)) {
        ensureSegmenter(ifindex, hook, pins.dir, pins.maps.itm_segctl, (what, fn) => undo.add(what, fn));
        if (outcome === 'adopted') outcome = 'repaired';
      }
      const attached = attachedProgId(ifindex, hook);
      if (attached !== pins.dispatch.id && hook === 'xdp') {
        // the device has one XDP slot: an older itm dispatcher is replaced, another program never
        if (attached !== undefined && progName(attached) !== 'itm_dispatch') {
          throw new ItmError(`cannot set up ${dev} xdp: another XDP program (id ${attached}, ${progName(attached) ?? '?'}) is attached to it`);
        }
        attachXdp(ifindex, pins.dispatch.fd, attached !== undefined);
        if (attached === undefined) {
          undo.add(`detach xdp from ${dev}`, () => xdp.detach(ifindex));
        } else {
          const old = BpfProgram.fromId(attached);
          undo.add(`put the earlier dispatcher back on ${dev} xdp`, () => {
            try { attachXdp(ifindex, old.fd, true); } finally { old.close(); }
          });
        }
        if (outcome === 'adopted') outcome = 'repaired';
      } else if (attached !== pins.dispatch.id) {
        // our slot holds another program: an older itm dispatcher is replaced, anything else is
        // someone else's filter, which itm never touches
        if (attached !== undefined && progName(attached) !== 'itm_dispatch') {
          throw new ItmError(`cannot set up ${dev} ${hook}: another filter holds tc handle 0x${TC_HANDLE.toString(16)} pref ${TC_PRIORITY}`);
        }
        const { created } = tc.hookCreate(ifindex, tcPoint(hook));
        if (created) {
          rec.createdClsact = true;
          undo.add(`remove clsact from ${dev}`, () => tc.hookDestroy(ifindex));
        }
        const opts = { handle: TC_HANDLE, priority: TC_PRIORITY };
        if (attached === undefined) {
          // no replace: should another tool take the slot meanwhile, this fails instead of evicting it
          tc.attach(ifindex, tcPoint(hook), pins.dispatch.fd, opts);
          undo.add(`detach from ${dev} ${hook}`, () => tc.detach(ifindex, tcPoint(hook), opts));
        } else {
          const old = BpfProgram.fromId(attached);
          tc.attach(ifindex, tcPoint(hook), pins.dispatch.fd, { ...opts, replace: true });
          undo.add(`put the earlier dispatcher back on ${dev} ${hook}`, () => {
            try { tc.attach(ifindex, tcPoint(hook), old.fd, { ...opts, replace: true }); } finally { old.close(); }
          });
        }
        if (outcome === 'adopted') outcome = 'repaired';
      }
    } finally {
      pins.close();
    }
    out[hook] = outcome;
  }
  writeDevice(rec);
  return out;
}

/**
 * Makes the record and the kernel agree, the kernel's chain being the truth: a recorded module
 * that is not in the chain (a crash between the two) is dropped; a module in the chain with no
 * record (the record was lost) is adopted under its program's name; and whatever a module left in
 * the shared maps without being in the chain is removed, so a later module with its id starts clean.
 */
function reconcileRecord(hr: HookRecord, pins: HookPins): void {
  const chain = pins.chain();
  const live = new Set(chain.map((s) => s.id));
  for (const m of hr.modules.filter((x) => !live.has(x.id))) {
    log.info(`dropping ${m.name} (id ${m.id}) from the record: it is not in the kernel's chain`);
  }
  hr.modules = hr.modules.filter((x) => live.has(x.id));
  chain.forEach((s, i) => {
    if (hr.modules.some((m) => m.id === s.id)) return;
    // the kernel keeps 15 characters of a program's name: enough to hint, not to be sure, so the
    // id makes the name unique
    let module = 'module';
    try {
      const p = BpfProgram.fromPin(join(instanceDir(pins.dir, s.id), 'prog'));
      module = p.name.replace(/^itm_module_/, '') || module;
      p.close();
    } catch { /* keep the placeholder */ }
    const name = `${module}-${s.id}`;
    hr.modules.push({ id: s.id, name, module, priority: DEFAULT_PRIORITY, seq: hr.nextSeq + i, params: {}, interest: ADOPTED, loadedAt: '' });
  });
  hr.nextSeq += chain.length;
  for (let id = 0; id < abi.ITM_MAX_SLOTS; id++) if (!live.has(id)) purgeModule(pins, id);
}

export function up(dev: string, hooks: readonly Hook[] = DEFAULT_HOOKS): Record<string, UpOutcome> {
  const ifindex = resolveDevice(dev, 'set up');
  return withNamespaceLock(() => {
    const undo = new Undo();
    try {
      return upLocked(dev, ifindex, hooks, undo);
    } catch (e) {
      const err = undo.rollback(e);
      tidy(ifindex);
      throw err;
    }
  });
}

/** Whether any filter is left on the device's clsact; when tc cannot tell, the answer is yes, so
 * that the qdisc (and whatever it holds) is never removed on a guess. */
function tcFiltersRemain(ifindex: number): boolean {
  // libbpf cannot list filters; ask tc, which shows filters of any kind
  const dev = ifIndexToName(ifindex);
  if (!dev) return true;
  for (const dir of ['ingress', 'egress']) {
    const r = spawnSync('tc', ['filter', 'show', 'dev', dev, dir], { encoding: 'utf8' });
    if (r.error || r.status !== 0 || r.stdout.trim()) return true;
  }
  return false;
}

export interface DownResult { hooks: Hook[]; unloaded: string[]; clsactRemoved: boolean }

export function down(dev: string, hooks: readonly Hook[] = HOOKS): DownResult {
  const ifindex = resolveDevice(dev, 'take down');
  return withNamespaceLock(() => {
    enterNamespace(false);
    const rec = readDevice(ifindex);
    const res: DownResult = { hooks: [], unloaded: [], clsactRemoved: false };
    for (const hook of hooks) {
      const dir = hookPinDir(ifindex, hook);
      const pins = HookPins.open(dir);
      const id = attachedProgId(ifindex, hook);
      // detach only our own filter: the one at itm's handle running an itm dispatcher
      let detached = false;
      if (id !== undefined && (id === pins?.dispatch.id || progName(id) === 'itm_dispatch')) {
        if (hook === 'xdp') xdp.detach(ifindex);
        else tc.detach(ifindex, tcPoint(hook), { handle: TC_HANDLE, priority: TC_PRIORITY });
        detached = true;
      }
      pins?.close();
      if (existsSync(dir) || detached) res.hooks.push(hook);
      if (existsSync(dir)) {
        res.unloaded.push(...(rec?.hooks[hook]?.modules.map((m) => `${m.name} (${hook})`) ?? []));
        for (let i = 0; i < abi.ITM_MAX_SLOTS; i++) removeDivert(ifindex, hook, i);
        if (hook !== 'xdp') removeSegmenter(ifindex, hook);
        rmSync(dir, { recursive: true, force: true });
      }
      // the record follows each hook, so a failure on the next one leaves it true
      if (rec?.hooks[hook]) {
        delete rec.hooks[hook];
        releaseLinkSettings(rec, dev);
        if (Object.keys(rec.hooks).length) writeDevice(rec);
      }
    }
    // what is left is what is on disk, whatever the record says
    if (HOOKS.every((h) => !existsSync(hookPinDir(ifindex, h)))) {
      if (rec?.createdClsact && !tcFiltersRemain(ifindex)) {
        tc.hookDestroy(ifindex);
        res.clsactRemoved = true;
      }
      removeDevice(ifindex);
      tidy(ifindex);
    }
    return res;
  });
}

function progName(id: number): string | undefined {
  try {
    const p = BpfProgram.fromId(id);
    const n = p.name;
    p.close();
    return n;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- load / unload / reorder

export interface LoadOptions {
  module: string;
  /** instance name, unique per hook (default: the module's name) */
  name?: string;
  dev: string;
  hook?: Hook;
  priority?: number;
  interest?: string | string[];
  params: Record<string, unknown>;
}

export interface LoadResult {
  id: number; hook: Hook; priority: number; position: number; broughtUp: boolean;
  /** the instances at the module's other hooks, when one load put it at several (hookSet) */
  others?: LoadResult[];
}

/** whether a module of the hook must see super-packets as segments (see src/segment.ts) */
const needsSegmenter = (hr: HookRecord) => hr.modules.some((m) => m.segments === true || m.kind === 'user');

const chainOrder = (mods: ModuleRecord[]) => [...mods].sort((a, b) => a.priority - b.priority || a.seq - b.seq);

/** The kernel chain for a hook's record: modules by priority, equal priorities in load order.
 * Modules already in the chain keep their slot as the kernel has it (devices stay the ones
 * resolved at load, even if renamed since); only a new module's interest is encoded. */
function chainOf(hr: HookRecord, dev: string, hook: Hook, ifindex: number, live: abi.ItmSlot[]): abi.ItmSlot[] {
  return chainOrder(hr.modules).map((m) => {
    const kept = live.find((s) => s.id === m.id);
    if (kept) return kept;
    const it = parseInterest(m.interest === 'all' ? [] : m.interest);
    return { ...encodeSlot(m.id, it, resolveInterestDevices(it, dev, hook, ifindex)), user: m.kind === 'user' ? 1 : 0, segments: m.segments ? 1 : 0 };
  });
}

function resolveInterestDevices(it: Interest, dev: string, hook: Hook, ifindex: number): { indev?: number; outdev?: number } {
  const out: { indev?: number; outdev?: number } = {};
  if (it.indev !== undefined) {
    const i = resolveDevice(it.indev, 'match indev');
    if (isIngress(hook) && i !== ifindex) {
      throw new ItmError(`invalid interest indev=${it.indev}: at ${hook} of ${dev} every packet comes in on ${dev}`);
    }
    out.indev = i;
  }
  if (it.outdev !== undefined) {
    if (isIngress(hook)) throw new ItmError(`invalid interest outdev=${it.outdev}: the way out is not known yet at ${hook}`);
    const o = resolveDevice(it.outdev, 'match outdev');
    if (o !== ifindex) throw new ItmError(`invalid interest outdev=${it.outdev}: at tc-egress of ${dev} every packet goes out on ${dev}`);
    out.outdev = o;
  }
  return out;
}

function writeGlobals(obj: BpfObject, def: ModuleDef, cfg: KernelConfig, id: number): void {
  const globals: Record<string, number | bigint | Buffer> = { ...cfg.globals, itm_module_id: id };
  for (const [name, v] of Object.entries(globals)) {
    const info = obj.globalInfo(name);
    if (!info) throw new ItmError(`${def.name}: its object has no global '${name}'`);
    let buf: Buffer;
    if (Buffer.isBuffer(v)) {
      buf = Buffer.alloc(info.size);
      v.copy(buf, 0, 0, info.size);
    } else {
      buf = Buffer.alloc(info.size);
      const big = BigInt(v);
      if (info.size === 8) buf.writeBigUInt64LE(BigInt.asUintN(64, big));
      else buf.writeUIntLE(Number(BigInt.asUintN(info.size * 8, big)), 0, info.size);
    }
    obj.setGlobal(name, buf);
  }
  for (const [m, n] of Object.entries(cfg.maxEntries ?? {})) obj.setMaxEntries(m, n);
}

/** Loads a kernel module's object with its parameters, sharing the dispatcher's maps (and those
 * of `reuse`, map → the pin directory of the instance that has it), and pins its maps and program
 * in `modDir`. */
function loadModuleObject(def: ModuleDef, objPath: string, cfg: KernelConfig, id: number,
  hp: HookPins, modDir: string, reuse: Map<string, string>): void {
  const obj = BpfObject.open(objPath);
  try {
    writeGlobals(obj, def, cfg, id);
    for (const m of SHARED_MAPS) obj.reuseMap(m, hp.maps[m]);
    for (const [m, dir] of reuse) {
      const shared = BpfMap.fromPin(join(dir, pinName(m)));
      try {
        obj.reuseMap(m, shared);
      } finally {
        shared.close();
      }
    }
    try {
      obj.load();
    } catch (e) {
      if (e instanceof BpfError) throw new ItmError(`${def.name}: the kernel refused its program: ${e.message}`, 'pass --verbose for the verifier log', { cause: e });
      throw e;
    }
    for (const m of obj.mapNames()) {
      if ((SHARED_MAPS as readonly string[]).includes(m)) continue;
      const map = obj.map(m);
      map.pin(join(modDir, pinName(m)));
      map.close();
    }
    const prog = obj.program(def.kernel!.program ?? moduleProgName(def.name));
    try {
      prog.pin(join(modDir, 'prog'));
    } finally {
      prog.close();
    }
  } finally {
    obj.close();
  }
}

/** The device's settings now, as `ip -d link` shows them. */
function linkDetails(dev: string): Record<string, unknown> {
  const r = spawnSync('ip', ['-j', '-d', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  if (r.status !== 0) throw new ItmError(`cannot read the settings of ${dev}: ${r.stderr.trim()}`);
  return (JSON.parse(r.stdout) as Array<Record<string, unknown>>)[0] ?? {};
}

function setLink(dev: string, key: string, value: number): void {
  const r = spawnSync('ip', ['link', 'set', 'dev', dev, key, String(value)], { encoding: 'utf8' });
  if (r.status !== 0) throw new ItmError(`cannot set ${key} ${value} on ${dev}: ${r.stderr.trim()}`);
}

/** Applies a module's linkSettings to the device (in `rec`, written by the caller), unless an
 * earlier instance did. */
function applyLinkSettings(def: ModuleDef, rec: DeviceRecord, dev: string, undo: Undo): void {
  const want = Object.entries(def.linkSettings ?? {});
  if (!want.length) return;
  const now = linkDetails(dev);
  rec.link ??= {};
  for (const [key, value] of want) {
    const had = rec.link[key];
    if (had) {
      if (!had.by.includes(def.name)) {
        had.by.push(def.name);
        undo.add(`forget ${def.name} needs ${key}`, () => { had.by = had.by.filter((m) => m !== def.name); });
      }
      continue;
    }
    const was = now[key];
    if (typeof was !== 'number') throw new ItmError(`${def.name} needs ${key} ${value} on ${dev}, and ip cannot show its ${key}`);
    if (was !== value) {
      setLink(dev, key, value);
      undo.add(`set ${key} ${was} on ${dev} again`, () => setLink(dev, key, was));
    }
    rec.link[key] = { was, by: [def.name] };
    undo.add(`forget ${key} of ${dev}`, () => { delete rec.link![key]; });
  }
}

/** Restores the settings no module left on the device needs; true if it changed `rec`. */
function releaseLinkSettings(rec: DeviceRecord, dev: string): boolean {
  const present = new Set(Object.values(rec.hooks).flatMap((h) => h?.modules.map((m) => m.module) ?? []));
  let changed = false;
  for (const [key, s] of Object.entries(rec.link ?? {})) {
    if (s.by.some((m) => present.has(m))) continue;
    try {
      setLink(dev, key, s.was);
    } catch (e) {
      log.warn(`${(e as Error).message}`);
    }
    delete rec.link![key];
    changed = true;
  }
  return changed;
}

/** The maps a new instance takes from instances already loaded: its `sharedMaps` from its sibling
 * on the device's other hook, its `nodeMaps` from any instance of its name in the namespace (which
 * must have its parameters: they are one instance, on several devices). */
function reusedMaps(def: ModuleDef, name: string, params: Record<string, ParamValue>, rec: DeviceRecord, hook: Hook): Map<string, string> {
  const reuse = new Map<string, string>();
  const other: Hook | undefined = hook === 'tc-ingress' ? 'tc-egress' : hook === 'tc-egress' ? 'tc-ingress' : undefined;
  const sibling = other && rec.hooks[other]?.modules.find((x) => x.name === name && x.module === def.name);
  if (sibling) for (const m of def.sharedMaps?.(params) ?? []) reuse.set(m, modPinDir(rec.ifindex, other, sibling.id));
  const node = def.nodeMaps?.(params) ?? [];
  if (!node.length) return reuse;
  const first = namedInstances(name).next();
  if (first.done) return reuse;
  const { r, h, m } = first.value;
  const where = `${ifIndexToName(r.ifindex) ?? `ifindex ${r.ifindex}`} ${h}`;
  if (m.module !== def.name) throw new ItmError(`${name} is another module (${m.module}) on ${where}: load this one with another --name`);
  if (JSON.stringify(m.params) !== JSON.stringify(params)) {
    throw new ItmError(`${name} is loaded on ${where} with other parameters (${JSON.stringify(m.params)}): its instances on this node share their maps, so they take the same ones (or load another with --name)`);
  }
  for (const map of node) if (!reuse.has(map)) reuse.set(map, modPinDir(r.ifindex, h, m.id));
  return reuse;
}

/** Every instance loaded under `name` in the namespace, device by device, in hook order. */
function* namedInstances(name: string): Generator<{ r: DeviceRecord; h: Hook; m: ModuleRecord }> {
  for (const r of listDeviceRecords()) {
    for (const h of HOOKS) {
      const m = r.hooks[h]?.modules.find((x) => x.name === name);
      if (m) yield { r, h, m };
    }
  }
}

/** A module loaded at each hook of its `hookSet`, all or none: a failure unloads the instances
 * already loaded and takes down the hooks it set up. */
async function loadSet(opts: LoadOptions, def: ModuleDef, hooks: readonly Hook[]): Promise<LoadResult> {
  const done: LoadResult[] = [];
  try {
    for (const hook of hooks) done.push(await load({ ...opts, hook }));
  } catch (e) {
    const name = opts.name ?? def.name;
    for (const r of done.reverse()) {
      try {
        unload(name, opts.dev, r.hook);
        if (r.broughtUp) down(opts.dev, [r.hook]);
      } catch { /* the first error is the one to report */ }
    }
    throw e;
  }
  return { ...done[done.length - 1]!, others: done.slice(0, -1) };
}

/** Runs a kernel module's `init` on its freshly pinned maps. */
function initModule(def: ModuleDef, name: string, params: Record<string, ParamValue>, modDir: string, dev: string, hook: Hook): void {
  const inst = new ModuleInstance(modDir);
  try {
    def.init!({
      name, params, state: {}, dev, hook,
      open: (map) => inst.open(map),
      global: () => { throw new Error('init cannot change globals: configure sets them'); },
    });
  } catch (e) {
    if (e instanceof ItmError) throw e;
    throw new ItmError(`${def.name}: cannot fill its maps: ${(e as Error).message}`, undefined, { cause: e });
  } finally {
    inst.close();
  }
}

export async function load(opts: LoadOptions): Promise<LoadResult> {
  const { def, file } = await resolveModule(opts.module);
  if (!opts.hook && def.hookSet) return loadSet(opts, def, def.hookSet);
  const hook = opts.hook ?? def.hooks[def.hooks.length - 1]!;
  if (!def.hooks.includes(hook)) throw new ItmError(`${def.name} cannot run at ${hook} (its hooks: ${def.hooks.join(', ')})`);
  const priority = opts.priority ?? DEFAULT_PRIORITY;
  if (!Number.isInteger(priority) || priority < 0 || priority > 1000) throw new ItmError(`invalid --priority ${opts.priority}: use 0-1000 (lower runs first)`);
  const params = validateParams(def, opts.params);
  // a user-space module, or a kernel module whose per-packet work this load runs in TypeScript
  const user = isUserModule(def) || def.userDatapath?.(params) === true;
  // the module's own checks (levels, combinations) run before anything is touched
  const cfg = kernelConfig(def, params);
  const name = opts.name ?? def.name;
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(name)) throw new ItmError(`invalid --name '${name}': letters, digits, - and _, up to 32, starting with a letter`);
  const given = opts.interest === undefined ? undefined : [opts.interest].flat();
  const interest = parseInterest(def.interestFor ? def.interestFor(params, hook, given) : given ?? def.interest);
  const ifindex = resolveDevice(opts.dev, `load ${def.name} on`);
  const objPath = def.kernel ? kernelObjectPath(def, hook) : '';
  resolveInterestDevices(interest, opts.dev, hook, ifindex);

  return withNamespaceLock(() => {
    const undo = new Undo();
    let pins: HookPins | undefined;
    try {
      // the hook is set up, adopted, or repaired first (and its record reconciled with the kernel)
      const hadRecord = readDevice(ifindex)?.hooks[hook] !== undefined;
      const outcome = upLocked(opts.dev, ifindex, [hook], undo)[hook];
      const broughtUp = outcome !== 'adopted';
      const rec = readDevice(ifindex)!;
      if (!hadRecord) {
        undo.add(`restore the record of ${opts.dev}`, () => {
          delete rec.hooks[hook];
          if (Object.keys(rec.hooks).length) writeDevice(rec); else removeDevice(ifindex);
        });
      }
      pins = HookPins.open(hookPinDir(ifindex, hook))!;
      const hp = pins;
      const hr = rec.hooks[hook]!;
      if (hr.modules.some((m) => m.name === name)) {
        throw new ItmError(`${name} is already loaded on ${opts.dev} ${hook} (unload it first, reorder it, or load another instance with --name)`);
      }
      const used = new Set(hp.chain().map((s) => s.id).concat(hr.modules.map((m) => m.id)));
      let id = 0;
      while (used.has(id)) id++;
      if (id >= abi.ITM_MAX_SLOTS) throw new ItmError(`${opts.dev} ${hook} already runs ${abi.ITM_MAX_SLOTS} modules, the most one hook can chain`);
      // whatever an earlier holder of this id left behind (a crash mid-unload) goes first
      purgeModule(hp, id);

      // 1. the module's program, with its parameters, sharing the dispatcher's maps; for a
      // user-space module, its veth pair and the programs on it
      const modDir = instanceDir(hp.dir, id);
      mkdirSync(modDir);
      undo.add(`remove ${modDir}`, () => rmSync(modDir, { recursive: true, force: true }));
      if (def.kernel) {
        // with a user data path, for its maps (and init, link settings): its program stays out
        // of the chain
        loadModuleObject(def, objPath, cfg, id, hp, modDir, reusedMaps(def, name, params, rec, hook));
        applyLinkSettings(def, rec, opts.dev, undo);
        if (def.init) initModule(def, name, params, modDir, opts.dev, hook);
      }
      if (user) createDivert(ifindex, hook, id, modDir, hp.maps.itm_uctl, def.failClosed === true, (what, fn) => undo.add(what, fn));
      const segments = user || def.perSegment === true;
      if (segments) ensureSegmenter(ifindex, hook, hp.dir, hp.maps.itm_segctl, (what, fn) => undo.add(what, fn));
      // 2. fresh counters, its prefixes, its program in the prog array: nothing reaches it yet
      hp.maps.itm_mstats.update(u32(id), Buffer.alloc(hp.maps.itm_mstats.valueBufferSize));
      if (user) hp.maps.itm_uflight.update(u32(id), Buffer.alloc(hp.maps.itm_uflight.valueSize));
      undo.add(`clear the prefixes and slot of ${id}`, () => purgeModule(hp, id));
      for (const [which, list] of [['itm_src', interest.src], ['itm_dst', interest.dst]] as const) {
        for (const p of list) hp.maps[which].update(lpmKey(id, p.addr, p.len, p.family), Buffer.from([1]));
      }
      if (!user) {
        const prog = BpfProgram.fromPin(join(modDir, 'prog'));
        try {
          hp.maps.itm_progs.update(u32(id), u32(prog.fd));
        } finally {
          prog.close();
        }
      }

      // 3. the new chain, switched to in one write
      const mrec: ModuleRecord = {
        id, name, module: def.name, priority, seq: hr.nextSeq, params,
        interest: formatInterest(interest), loadedAt: new Date().toISOString(),
        ...(user ? { kind: 'user' as const, source: file, ...(def.kernel ? { maps: true as const } : {}) } : {}),
        ...(segments ? { segments: true as const } : {}),
      };
      const next: HookRecord = { modules: [...hr.modules, mrec], nextSeq: hr.nextSeq + 1 };
      const before = hp.chain();
      undo.add('restore the chain', () => hp.setChain(before));
      hp.setChain(chainOf(next, opts.dev, hook, ifindex, before));
      rec.hooks[hook] = next;
      writeDevice(rec);
      const position = chainOrder(next.modules).findIndex((m) => m.id === id);
      return { id, hook, priority, position, broughtUp };
    } catch (e) {
      // undo while the pinned maps are still open: every step needs them
      const err = undo.rollback(e);
      pins?.close();
      pins = undefined;
      tidy(ifindex);
      throw err;
    } finally {
      pins?.close();
    }
  });
}

function findLoaded(rec: DeviceRecord | undefined, name: string, dev: string, hook?: Hook): { hook: Hook; m: ModuleRecord } {
  const hits: Array<{ hook: Hook; m: ModuleRecord }> = [];
  for (const h of HOOKS) {
    if (hook && h !== hook) continue;
    const m = rec?.hooks[h]?.modules.find((x) => x.name === name);
    if (m) hits.push({ hook: h, m });
  }
  if (!hits.length) throw new ItmError(`${name} is not loaded on ${dev}${hook ? ` ${hook}` : ''}`);
  if (hits.length > 1) throw new ItmError(`${name} is loaded on ${dev} at ${hits.map((x) => x.hook).join(' and ')}: say which with --hook`);
  return hits[0]!;
}

interface Loaded { ifindex: number; rec: DeviceRecord; hook: Hook; hr: HookRecord; m: ModuleRecord; pins: HookPins }

/** Runs `fn` on a loaded module, under the namespace lock, with its hook's record reconciled with
 * the kernel first (a crash between a chain switch and the record's write is repaired here). */
function withLoaded<T>(name: string, dev: string, hook: Hook | undefined, action: string, fn: (l: Loaded) => T): T {
  const ifindex = resolveDevice(dev, `${action} ${name} on`);
  return withNamespaceLock(() => {
    enterNamespace(false);
    const rec = readDevice(ifindex);
    const { hook: h } = findLoaded(rec, name, dev, hook);
    const pins = HookPins.open(hookPinDir(ifindex, h));
    if (!pins) throw new ItmError(`${dev} ${h} is not set up (its pins are gone): run itmctl up --dev ${dev}`);
    try {
      const hr = rec!.hooks[h]!;
      reconcileRecord(hr, pins);
      const { m } = findLoaded(rec, name, dev, h);
      return fn({ ifindex, rec: rec!, hook: h, hr, m, pins });
    } finally {
      pins.close();
    }
  });
}

/** Switches the hook to the chain of `next` and records it; if the record cannot be written, the
 * kernel goes back to the chain it had, so the two never disagree. */
function switchChain(l: Loaded, dev: string, next: HookRecord): void {
  const before = l.pins.chain();
  l.pins.setChain(chainOf(next, dev, l.hook, l.ifindex, before));
  try {
    l.rec.hooks[l.hook] = next;
    writeDevice(l.rec);
  } catch (e) {
    l.rec.hooks[l.hook] = l.hr;
    l.pins.setChain(before);
    throw e;
  }
}

export function unload(name: string, dev: string, hook?: Hook): { hook: Hook; id: number } {
  return withLoaded(name, dev, hook, 'unload', (l) => {
    // out of the chain first (one switch, after which no new packet reaches it), then its parts:
    // setChain waited for the packets that were still on the old chain
    const next = { modules: l.hr.modules.filter((x) => x.id !== l.m.id), nextSeq: l.hr.nextSeq };
    switchChain(l, dev, next);
    purgeModule(l.pins, l.m.id);
    // the segments already on their way find their entries still there; new ones are not cut
    if (l.hook !== 'xdp' && !needsSegmenter(next)) removeSegmenter(l.ifindex, l.hook, l.pins.maps.itm_segctl);
    if (releaseLinkSettings(l.rec, dev)) writeDevice(l.rec);
    return { hook: l.hook, id: l.m.id };
  });
}

/** Without a hook, a kernel module that one load put at several hooks (its `hookSet`) comes off
 * them all; undefined when `name` is not such a module on `dev`. */
export async function unloadSet(name: string, dev: string): Promise<Array<{ hook: Hook; id: number }> | undefined> {
  const at = list(dev).flatMap((d) => d.hooks.flatMap((h) => h.modules.filter((m) => m.name === name).map((m) => ({ hook: h.hook, module: m.module }))));
  if (at.length < 2 || !at.every((x) => x.module === at[0]!.module) || !(await findModule(at[0]!.module)).hookSet) return undefined;
  return at.map((x) => unload(name, dev, x.hook));
}

/** An instance off its hook, or, without a hook, off every hook one load put it at (its
 * hookSet): the last hook's result, with the others. */
export async function unloadInstance(name: string, dev: string, hook?: Hook): Promise<{ hook: Hook; id: number; others?: Array<{ hook: Hook; id: number }> }> {
  const all = hook ? undefined : await unloadSet(name, dev);
  return all ? { ...all[all.length - 1]!, others: all.slice(0, -1) } : unload(name, dev, hook);
}

export function reorder(name: string, dev: string, priority: number, hook?: Hook): { hook: Hook; position: number } {
  if (!Number.isInteger(priority) || priority < 0 || priority > 1000) throw new ItmError(`invalid --priority ${priority}: use 0-1000 (lower runs first)`);
  return withLoaded(name, dev, hook, 'reorder', (l) => {
    // a new priority puts the module last among equals, as a fresh load would
    const next: HookRecord = {
      modules: l.hr.modules.map((x) => (x.id === l.m.id ? { ...x, priority, seq: l.hr.nextSeq } : x)),
      nextSeq: l.hr.nextSeq + 1,
    };
    switchChain(l, dev, next);
    return { hook: l.hook, position: chainOrder(next.modules).findIndex((x) => x.id === l.m.id) };
  });
}

export interface PeriodicRun {
  module: string;
  hook: Hook;
  intervalMs: number;
  /** one period: class-update's figures, then what controller-update changed */
  tick(): { classes?: Record<string, number | string>; changed?: string };
  close(): void;
}

/** The periodic functions (class-update, controller-update) of a loaded module instance, ready to
 * be run by whatever keeps running: `itmctl watch` for now. */
export async function periodic(name: string, dev: string, hook?: Hook): Promise<PeriodicRun> {
  const ifindex = resolveDevice(dev, `run the periodic functions of ${name} on`);
  const { h, m } = withNamespaceLock(() => {
    enterNamespace(false);
    const found = findLoaded(readDevice(ifindex), name, dev, hook);
    return { h: found.hook, m: found.m };
  });
  const def = await findModule(m.module);
  if (!def.every) throw new ItmError(`${name} (${m.module}) has no periodic functions`);
  const every = def.every;
  const inst = ModuleInstance.of(ifindex, h, m.id, kernelObjectPath(def, h));
  const ctx: PeriodicContext = {
    name, dev, hook: h, params: m.params, state: {} as Record<string, unknown>,
    open: (map) => inst.open(map),
    global: (g) => inst.global(g),
  };
  return {
    module: m.module, hook: h, intervalMs: every.intervalMs,
    tick: () => {
      const classes = every.classUpdate?.(ctx);
      const changed = every.controllerUpdate?.(ctx);
      return { ...(classes ? { classes } : {}), ...(changed ? { changed } : {}) };
    },
    close: () => {
      try {
        every.stop?.(ctx);
      } finally {
        inst.close();
      }
    },
  };
}

/** The pinned maps of a kernel module instance loaded under `name` anywhere in the namespace
 * (its first, when it is on several devices and hooks), for one with `nodeMaps`, whose maps are
 * the same on all. */
export function nodeInstance(name: string): { dev: string; hook: Hook; module: string; params: Record<string, ParamValue>; instance: ModuleInstance } {
  const hit = withNamespaceLock(() => {
    enterNamespace(false);
    for (const x of namedInstances(name)) if (hasMaps(x.m)) return x;
    return undefined;
  });
  if (!hit) throw new ItmError(`${name} is not loaded in this network namespace`);
  return {
    dev: ifIndexToName(hit.r.ifindex) ?? `ifindex ${hit.r.ifindex}`, hook: hit.h, module: hit.m.module, params: hit.m.params,
    instance: ModuleInstance.of(hit.r.ifindex, hit.h, hit.m.id),
  };
}

/** The per-flow state of a loaded module instance, largest flows first. */
export async function flows(name: string, dev: string, hook?: Hook): Promise<{ hook: Hook; module: string; rows: FlowRow[] }> {
  const ifindex = resolveDevice(dev, `read the flows of ${name} on`);
  const { h, m } = withNamespaceLock(() => {
    enterNamespace(false);
    const found = findLoaded(readDevice(ifindex), name, dev, hook);
    return { h: found.hook, m: found.m };
  });
  const def = await findModule(m.module);
  if (!def.flows) throw new ItmError(`${name} (${m.module}) keeps no per-flow state to show`);
  const inst = ModuleInstance.of(ifindex, h, m.id);
  try {
    const rows = def.flows((map) => inst.open(map), m.params);
    return { hook: h, module: m.module, rows: rows.sort((a, b) => b.size - a.size) };
  } finally {
    inst.close();
  }
}

// ---------------------------------------------------------------- list / explain

export interface UserView {
  /** the host renews its deadline: packets reach it */
  serving: boolean;
  /** what cannot reach it is dropped, not let go past it (ModuleDef.failClosed) */
  failClosed: boolean;
  diverted: number;
  inFlight: number;
  /** packets that went past it, by why */
  bypassed: { down: number; behind: number; size: number };
  /** what its host counted */
  received: number; accepted: number; modified: number; malformed: number;
}
export interface ModuleView {
  position: number; id: number; name: string; module: string; kind: 'kernel' | 'user'; priority: number; interest: string;
  params: Record<string, ParamValue>; loadedAt: string;
  counters: { seen: number; matched: number; dropped: number; errors: number; classes: Record<string, number> };
  user?: UserView;
}
export interface HookView {
  hook: Hook; attached: boolean; progId?: number;
  /** at xdp: how the dispatcher is attached (native, generic) */
  mode?: string;
  packets: Record<string, number>;
  modules: ModuleView[];
}
export interface DeviceView { dev: string; ifindex: number; hooks: HookView[] }

const num = (x: bigint | undefined) => Number(x ?? 0n);

export function list(dev?: string): DeviceView[] {
  return withNamespaceLock(() => listLocked(dev));
}

function listLocked(dev?: string): DeviceView[] {
  enterNamespace(false);
  let recs = listDeviceRecords();
  if (dev !== undefined) {
    const ifindex = resolveDevice(dev, 'list');
    recs = recs.filter((r) => r.ifindex === ifindex);
  }
  return recs.map((rec) => {
    const hooks: HookView[] = [];
    for (const hook of HOOKS) {
      const hr = rec.hooks[hook];
      if (!hr) continue;
      const pins = HookPins.open(hookPinDir(rec.ifindex, hook));
      if (!pins) {
        hooks.push({ hook, attached: false, packets: {}, modules: [] });
        continue;
      }
      try {
        const progId = attachedProgId(rec.ifindex, hook);
        const d = pins.dstats();
        const packets = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, num(v as bigint)]));
        const byId = new Map(hr.modules.map((m) => [m.id, m]));
        const modules = pins.chain().map((s, position): ModuleView => {
          const m = byId.get(s.id);
          const st = pins.mstats(s.id);
          const classes: Record<string, number> = {};
          (st.classes ?? []).forEach((c, i) => {
            if (c) classes[i === abi.ITM_CLASS_BUCKETS - 1 ? `${i}+` : String(i)] = num(c);
          });
          const counters = { seen: num(st.seen), matched: num(st.matched), dropped: num(st.dropped), errors: num(st.errors), classes };
          const user = s.user ? userView(pins, s.id, st, counters) : undefined;
          return {
            position, id: s.id, name: m?.name ?? `module-${s.id}`, module: m?.module ?? '?', kind: s.user ? 'user' : 'kernel',
            priority: m?.priority ?? DEFAULT_PRIORITY, interest: m?.interest ?? '?', params: m?.params ?? {}, loadedAt: m?.loadedAt ?? '',
            counters, ...(user ? { user } : {}),
          };
        });
        const mode = hook === 'xdp' ? xdpMode(rec.ifindex) : undefined;
        hooks.push({ hook, attached: progId === pins.dispatch.id, ...(progId !== undefined ? { progId } : {}), ...(mode ? { mode } : {}), packets, modules });
      } finally {
        pins.close();
      }
    }
    return { dev: ifIndexToName(rec.ifindex) ?? rec.dev, ifindex: rec.ifindex, hooks };
  });
}

/** A user module's figures: the dispatcher's (diverted, bypassed, in flight) and its host's,
 * whose drops, errors and classes go into the module's counters like a kernel module's. */
function userView(pins: HookPins, id: number, st: abi.ItmMstats, counters: ModuleView['counters']): UserView {
  const uc = abi.decode<abi.ItmUctl>(abi.itm_uctl, pins.maps.itm_uctl.lookup(u32(id))!);
  const fl = abi.decode<abi.ItmUflight>(abi.itm_uflight, pins.maps.itm_uflight.lookup(u32(id))!);
  let us: abi.ItmUstats | undefined;
  try {
    const m = BpfMap.fromPin(join(instanceDir(pins.dir, id), 'ustats'));
    try { us = abi.decode<abi.ItmUstats>(abi.itm_ustats, m.lookup(u32(0))!); } finally { m.close(); }
  } catch { /* not made yet */ }
  if (us) {
    counters.dropped += num(us.dropped) + num(us.malformed);
    counters.errors += num(us.errors);
    us.classes.forEach((c, i) => {
      const k = i === abi.ITM_CLASS_BUCKETS - 1 ? `${i}+` : String(i);
      if (c) counters.classes[k] = (counters.classes[k] ?? 0) + num(c);
    });
  }
  const inFlight = Number(fl.sent - fl.back - uc.gone);
  return {
    serving: uc.deadline_ns > process.hrtime.bigint(),
    failClosed: (uc.flags & abi.ITM_U_FAIL_CLOSED) !== 0,
    diverted: num(st.diverted), inFlight: Math.max(0, inFlight),
    bypassed: { down: num(st.bypass_down), behind: num(st.bypass_behind), size: num(st.bypass_size) },
    received: num(us?.received), accepted: num(us?.accepted), modified: num(us?.modified), malformed: num(us?.malformed),
  };
}

export interface ExplainStep { position: number; name: string; sees: boolean; why?: string }
export interface ExplainView { dev: string; hook: Hook; steps: ExplainStep[] }

export function explain(dev: string, flow: FlowQuery, hooks: readonly Hook[] = HOOKS): ExplainView[] {
  const ifindex = resolveDevice(dev, 'explain a flow on');
  return withNamespaceLock(() => explainLocked(dev, ifindex, flow, hooks));
}

function explainLocked(dev: string, ifindex: number, flow: FlowQuery, hooks: readonly Hook[]): ExplainView[] {
  enterNamespace(false);
  const rec = readDevice(ifindex);
  if (!rec || !Object.keys(rec.hooks).length) throw new ItmError(`${dev} is not set up (itmctl up --dev ${dev})`);
  const out: ExplainView[] = [];
  for (const hook of hooks) {
    const hr = rec.hooks[hook];
    if (!hr) continue;
    const pins = HookPins.open(hookPinDir(ifindex, hook));
    if (!pins) continue;
    try {
      const names = new Map(hr.modules.map((m) => [m.id, m.name]));
      const inTrie = (which: 'src' | 'dst', id: number, addr: Buffer) =>
        pins.maps[which === 'src' ? 'itm_src' : 'itm_dst'].lookup(lpmKey(id, addr, flow.family === 4 ? 32 : 128, flow.family)) !== undefined;
      const steps = pins.chain().map((s, position): ExplainStep => {
        const why = mismatch(s, flow, { hookIfindex: ifindex, egress: hook === 'tc-egress', inTrie });
        return { position, name: names.get(s.id) ?? `module-${s.id}`, sees: why === undefined, ...(why ? { why } : {}) };
      });
      out.push({ dev, hook, steps });
    } finally {
      pins.close();
    }
  }
  return out;
}
