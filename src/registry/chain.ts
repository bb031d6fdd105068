// A hook's chain: modules loaded into it, unloaded from it and reordered in it. Each change is
// one transaction (src/registry/undo.ts) under the namespace lock, and reaches packets as one
// swap of the hook's program, linked for the new chain table (src/registry/compose.ts).
import { mkdirSync, rmSync } from 'node:fs';
import * as abi from '../abi.js';
import { ItmError } from '../errors.js';
import { findModule, kernelObjectPath, resolveModule } from '../catalog.js';
import { ModuleInstance } from '../instance.js';
import { createDivert } from '../divert.js';
import { ensureSegmenter, removeSegmenter } from '../segment.js';
import { instanceDir } from '../instance.js';
import { encodeSlot, formatInterest, lpmKey, parseInterest, type Interest } from '../interest.js';
import {
  changedParams,
  HOOKS,
  hostFunctions,
  isIngress,
  isUserModule,
  kernelConfig,
  validateParams,
  whyReload,
  type Hook,
  type KernelConfig,
  type ModuleDef,
  type ParamValue,
} from '../module-def.js';
import {
  hookPinDir,
  readDevice,
  removeDevice,
  withNamespaceLock,
  writeDevice,
  type DeviceRecord,
  type HookRecord,
  type ModuleRecord,
} from '../state.js';
import { enterNamespace, purgeModule, tidy } from './cleanup.js';
import { resolveDevice } from './devices.js';
import { down, reconcileRecord, upLocked } from './hooks.js';
import { commit, compose, instanceObject, kernelIds, writeInstanceObject, type Composed } from './compose.js';
import { globalBytes, initModule, loadModuleObject, reusedMaps } from './objects.js';
import { HookPins, u32 } from './pins.js';
import { chainOrder, DEFAULT_PRIORITY, findLoaded, needsSegmenter } from './records.js';
import { Undo } from './undo.js';
import { copyBtf } from './core-btf.js';

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
  id: number;
  hook: Hook;
  priority: number;
  position: number;
  broughtUp: boolean;
  /** the instances at the module's other hooks, when one load put it at several (hookSet) */
  others?: LoadResult[];
}

/** The kernel chain for a hook's record: modules by priority, equal priorities in load order.
 * Modules already in the chain keep their slot as the kernel has it (devices stay the ones
 * resolved at load, even if renamed since); only a new module's interest is encoded. */
function chainOf(hr: HookRecord, dev: string, hook: Hook, ifindex: number, live: abi.ItmSlot[]): abi.ItmSlot[] {
  return chainOrder(hr.modules).map((m) => {
    const kept = live.find((s) => s.id === m.id);
    if (kept) return kept;
    const it = parseInterest(m.interest === 'all' ? [] : m.interest);
    return {
      ...encodeSlot(m.id, it, resolveInterestDevices(it, dev, hook, ifindex)),
      user: m.kind === 'user' ? 1 : 0,
      segments: m.segments ? 1 : 0,
    };
  });
}

/** Resolves the devices an interest names, refusing those that cannot be at `hook` of `dev`. */
export function resolveInterestDevices(it: Interest, dev: string, hook: Hook, ifindex: number): { indev?: number; outdev?: number } {
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

export function checkPriority(priority: number, given: unknown = priority): void {
  if (!Number.isInteger(priority) || priority < 0 || priority > 1000)
    throw new ItmError(`invalid --priority ${given}: use 0-1000 (lower runs first)`);
}

/** An instance's name: what itmctl, the records and the pins' messages can carry. */
export function checkInstanceName(name: string): void {
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(name))
    throw new ItmError(`invalid --name '${name}': letters, digits, - and _, up to 32, starting with a letter`);
}

/** The interest an instance has at `hook`: the module's say (interestFor), else what was given,
 * else the module's default. */
export function interestAt(def: ModuleDef, params: Record<string, ParamValue>, hook: Hook, given: string[] | undefined): Interest {
  return parseInterest(def.interestFor ? def.interestFor(params, hook, given) : (given ?? def.interest));
}

/** A load, checked and resolved before anything is touched. */
interface LoadPlan {
  def: ModuleDef;
  file: string;
  name: string;
  dev: string;
  ifindex: number;
  hook: Hook;
  priority: number;
  params: Record<string, ParamValue>;
  cfg: KernelConfig;
  interest: Interest;
  objPath: string;
  /** its packets go to a host in user space: a user-space module, or a kernel module whose
   * per-packet work this load runs in TypeScript (userDatapath) */
  user: boolean;
  /** it sees super-packets as segments (src/segment.ts) */
  segments: boolean;
}

async function planLoad(opts: LoadOptions, def: ModuleDef, file: string, hook: Hook): Promise<LoadPlan> {
  if (!def.hooks.includes(hook)) throw new ItmError(`${def.name} cannot run at ${hook} (its hooks: ${def.hooks.join(', ')})`);
  const priority = opts.priority ?? DEFAULT_PRIORITY;
  checkPriority(priority, opts.priority);
  const params = validateParams(def, opts.params);
  const user = hostFunctions(def, params) !== undefined;
  // the module's own checks (levels, combinations) run before anything is touched
  const cfg = kernelConfig(def, params);
  const name = opts.name ?? def.name;
  checkInstanceName(name);
  const interest = interestAt(def, params, hook, opts.interest === undefined ? undefined : [opts.interest].flat());
  const ifindex = resolveDevice(opts.dev, `load ${def.name} on`);
  const objPath = def.kernel ? kernelObjectPath(def, hook) : '';
  resolveInterestDevices(interest, opts.dev, hook, ifindex);
  return {
    def,
    file,
    name,
    dev: opts.dev,
    ifindex,
    hook,
    priority,
    params,
    cfg,
    interest,
    objPath,
    user,
    segments: user || def.kernel?.perSegment === true,
  };
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
      } catch {
        /* the first error is the one to report */
      }
    }
    throw e;
  }
  return { ...done[done.length - 1]!, others: done.slice(0, -1) };
}

export async function load(opts: LoadOptions): Promise<LoadResult> {
  const { def, file } = await resolveModule(opts.module);
  if (!opts.hook && def.kernel?.hookSet) return loadSet(opts, def, def.kernel.hookSet);
  const plan = await planLoad(opts, def, file, opts.hook ?? def.hooks[def.hooks.length - 1]!);
  return withNamespaceLock(() => {
    const undo = new Undo();
    let pins: HookPins | undefined;
    let composed: Composed | undefined;
    try {
      // the hook is set up, adopted, or repaired first (and its record reconciled with the kernel)
      const { dev, ifindex, hook } = plan;
      const hadRecord = readDevice(ifindex)?.hooks[hook] !== undefined;
      const broughtUp = upLocked(dev, ifindex, [hook], undo)[hook] !== 'adopted';
      const rec = readDevice(ifindex)!;
      if (!hadRecord) {
        undo.add(`restore the record of ${dev}`, () => {
          delete rec.hooks[hook];
          if (Object.keys(rec.hooks).length) writeDevice(rec);
          else removeDevice(ifindex);
        });
      }
      pins = HookPins.open(hookPinDir(ifindex, hook))!;
      const id = freeSlot(plan, pins, rec.hooks[hook]!);
      install(plan, id, pins, rec, undo);
      const next = withInstance(plan, id, rec.hooks[hook]!);
      const linked = link(plan, id, pins, rec, next, undo);
      composed = linked.c;
      // step 3: the program and its chain on the hook in one step, then recorded
      commit(pins, ifindex, hook, linked.c, linked.table, undo);
      rec.hooks[hook] = next;
      writeDevice(rec);
      return { id, hook, priority: plan.priority, position: chainOrder(next.modules).findIndex((m) => m.id === id), broughtUp };
    } catch (e) {
      // undo while the pinned maps are still open: every step needs them
      const err = undo.rollback(e);
      pins?.close();
      pins = undefined;
      tidy(plan.ifindex);
      throw err;
    } finally {
      composed?.close();
      pins?.close();
    }
  });
}

/** The lowest slot id neither the kernel's chain nor the record uses, cleared of whatever an
 * earlier holder left (a crash mid-unload). */
function freeSlot(p: LoadPlan, hp: HookPins, hr: HookRecord): number {
  if (hr.modules.some((m) => m.name === p.name)) {
    throw new ItmError(
      `${p.name} is already loaded on ${p.dev} ${p.hook} (unload it first, reorder it, or load another instance with --name)`,
    );
  }
  const used = new Set(
    hp
      .chain()
      .map((s) => s.id)
      .concat(hr.modules.map((m) => m.id)),
  );
  let id = 0;
  while (used.has(id)) id++;
  if (id >= abi.ITM_MAX_SLOTS)
    throw new ItmError(`${p.dev} ${p.hook} already runs ${abi.ITM_MAX_SLOTS} modules, the most one hook can chain`);
  purgeModule(hp, id);
  return id;
}

/** Step 1: a kernel module's copy of its object (src/registry/compose.ts); a kernel module with
 * its user data path, its object loaded for its maps; for packets in user space, its veth pair
 * and the programs on it; the segmentation pair if it needs one. */
function install(p: LoadPlan, id: number, hp: HookPins, rec: DeviceRecord, undo: Undo): void {
  const modDir = instanceDir(hp.dir, id);
  mkdirSync(modDir);
  undo.add(`remove ${modDir}`, () => rmSync(modDir, { recursive: true, force: true }));
  if (!isUserModule(p.def)) {
    if (p.user) {
      loadModuleObject(p.def, p.objPath, p.cfg, id, hp, modDir, reusedMaps(p.def, p.name, p.params, rec, p.hook));
      if (p.def.kernel.init) initModule(p.def, p.name, p.params, modDir, p.dev, p.hook);
    } else {
      const copy = instanceObject(p.ifindex, p.hook, id);
      undo.add(`remove ${copy}`, () => {
        rmSync(copy, { force: true });
        rmSync(copyBtf(copy), { force: true });
      });
      writeInstanceObject(p.objPath, id, copy);
    }
  }
  if (p.user) createDivert(p.ifindex, p.hook, id, modDir, hp.maps.itm_uctl, hostFunctions(p.def, p.params)?.failClosed === true, undo.add);
  if (p.segments) ensureSegmenter(p.ifindex, p.hook, hp.dir, hp.maps.itm_segctl, undo.add);
}

/** Step 2: fresh counters and its prefixes; the chain with it in the idle table, and the hook's
 * program linked for it, a kernel module's maps made and filled (init): nothing reaches it yet. */
function link(p: LoadPlan, id: number, hp: HookPins, rec: DeviceRecord, next: HookRecord, undo: Undo): { c: Composed; table: number } {
  hp.resetMstats(id);
  if (p.user) hp.maps.itm_uflight.update(u32(id), Buffer.alloc(hp.maps.itm_uflight.valueSize));
  undo.add(`clear the prefixes and slot of ${id}`, () => purgeModule(hp, id));
  for (const [which, list] of [
    ['itm_src', p.interest.src],
    ['itm_dst', p.interest.dst],
  ] as const) {
    for (const x of list) hp.maps[which].update(lpmKey(id, x.addr, x.len, x.family), Buffer.from([1]));
  }
  const table = hp.writeIdle(chainOf(next, p.dev, p.hook, p.ifindex, hp.chain()));
  const def = isUserModule(p.def) || p.user ? undefined : p.def;
  const first = def ? { id, module: def.name, cfg: p.cfg, reuse: reusedMaps(def, p.name, p.params, rec, p.hook) } : undefined;
  const c = compose(hp, p.ifindex, p.hook, hp.table(table), kernelIds(next), first);
  try {
    if (def?.kernel.init) initModule(def, p.name, p.params, instanceDir(hp.dir, id), p.dev, p.hook);
  } catch (e) {
    c.close();
    throw e;
  }
  return { c, table };
}

/** The record of the hook with the new instance in it. */
function withInstance(p: LoadPlan, id: number, hr: HookRecord): HookRecord {
  const mrec: ModuleRecord = {
    id,
    name: p.name,
    module: p.def.name,
    priority: p.priority,
    seq: hr.nextSeq,
    params: p.params,
    interest: formatInterest(p.interest),
    loadedAt: new Date().toISOString(),
    ...(p.user ? { kind: 'user' as const, source: p.file, ...(p.def.kernel ? { maps: true as const } : {}) } : {}),
    ...(p.segments ? { segments: true as const } : {}),
  };
  return { modules: [...hr.modules, mrec], nextSeq: hr.nextSeq + 1 };
}

interface Loaded {
  ifindex: number;
  rec: DeviceRecord;
  hook: Hook;
  hr: HookRecord;
  m: ModuleRecord;
  pins: HookPins;
}

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

/** Switches the hook to the chain of `next` (a program linked for it, swapped in with its table)
 * and records it; if the record cannot be written, the hook goes back to the program and chain
 * it had, so the two never disagree. */
function switchChain(l: Loaded, dev: string, next: HookRecord): void {
  const undo = new Undo();
  let c: Composed | undefined;
  try {
    const table = l.pins.writeIdle(chainOf(next, dev, l.hook, l.ifindex, l.pins.chain()));
    c = compose(l.pins, l.ifindex, l.hook, l.pins.table(table), kernelIds(next));
    commit(l.pins, l.ifindex, l.hook, c, table, undo);
    l.rec.hooks[l.hook] = next;
    writeDevice(l.rec);
  } catch (e) {
    l.rec.hooks[l.hook] = l.hr;
    throw undo.rollback(e);
  } finally {
    c?.close();
  }
}

export function unload(name: string, dev: string, hook?: Hook): { hook: Hook; id: number } {
  return withLoaded(name, dev, hook, 'unload', (l) => {
    // out of the chain first (one switch, after which no new packet reaches it), then its parts:
    // the switch waited for the packets that were still on the old program
    const next = { modules: l.hr.modules.filter((x) => x.id !== l.m.id), nextSeq: l.hr.nextSeq };
    switchChain(l, dev, next);
    purgeModule(l.pins, l.m.id);
    // the segments already on their way find their entries still there; new ones are not cut
    if (l.hook !== 'xdp' && !needsSegmenter(next)) removeSegmenter(l.ifindex, l.hook, l.pins.maps.itm_segctl);
    return { hook: l.hook, id: l.m.id };
  });
}

/** Without a hook, a kernel module that one load put at several hooks (its `hookSet`) comes off
 * them all; undefined when `name` is not such a module on `dev`. */
export async function unloadSet(name: string, dev: string): Promise<Array<{ hook: Hook; id: number }> | undefined> {
  const ifindex = resolveDevice(dev, `unload ${name} on`);
  const rec = withNamespaceLock(() => {
    enterNamespace(false);
    return readDevice(ifindex);
  });
  const at = HOOKS.flatMap((hook) =>
    (rec?.hooks[hook]?.modules ?? []).filter((m) => m.name === name).map((m) => ({ hook, module: m.module })),
  );
  if (at.length < 2 || !at.every((x) => x.module === at[0]!.module) || !(await findModule(at[0]!.module)).kernel?.hookSet) return undefined;
  return at.map((x) => unload(name, dev, x.hook));
}

/** An instance off its hook, or, without a hook, off every hook one load put it at (its
 * hookSet): the last hook's result, with the others. */
export async function unloadInstance(
  name: string,
  dev: string,
  hook?: Hook,
): Promise<{ hook: Hook; id: number; others?: Array<{ hook: Hook; id: number }> }> {
  const all = hook ? undefined : await unloadSet(name, dev);
  return all ? { ...all[all.length - 1]!, others: all.slice(0, -1) } : unload(name, dev, hook);
}

export function reorder(name: string, dev: string, priority: number, hook?: Hook): { hook: Hook; position: number } {
  checkPriority(priority);
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

/**
 * Gives a running instance of a kernel module new parameters in place, where its declaration
 * says they can change live (ParamSpec.live): the globals `configure` makes of them that differ
 * are rewritten in the instance's pinned sections (.data, .bss), its module's `reconfigure` brings
 * its maps in line, and its record follows. Its
 * program, slot, maps and flows stay; itmd restarts its periodic functions with the new
 * parameters. Anything else is refused (reload the instance).
 */
export async function setParams(
  name: string,
  dev: string,
  hook: Hook,
  given: Record<string, unknown>,
): Promise<{ hook: Hook; id: number; changed: string[] }> {
  const ifindex = resolveDevice(dev, `set the parameters of ${name} on`);
  const rec = withNamespaceLock(() => {
    enterNamespace(false);
    return readDevice(ifindex);
  });
  const def = await findModule(findLoaded(rec, name, dev, hook).m.module);
  const params = validateParams(def, given);
  return withLoaded(name, dev, hook, 'set the parameters of', (l) => {
    const changed = changedParams(l.m.params, params);
    if (!changed.length || l.m.module !== def.name) return { hook: l.hook, id: l.m.id, changed: [] };
    const why = whyReload(def, l.m.params, params);
    if (why) throw new ItmError(`cannot change ${changed.join(', ')} of ${name} on ${dev} ${l.hook} while it runs: ${why} (reload it)`);
    const before = kernelConfig(def, l.m.params).globals ?? {};
    const after = kernelConfig(def, params).globals ?? {};
    const inst = ModuleInstance.of(l.ifindex, l.hook, l.m.id, kernelObjectPath(def, l.hook));
    const undo = new Undo();
    try {
      for (const [g, v] of Object.entries(after)) {
        const gl = inst.global(g);
        const bytes = globalBytes(v, gl.size);
        const was = before[g];
        if (was !== undefined && globalBytes(was, gl.size).equals(bytes)) continue;
        if (!/^\.(data|bss)/.test(gl.section))
          throw new ItmError(`${def.name}: its global '${g}' is read-only (${gl.section}), so its parameters cannot be declared live`);
        const old = Buffer.from(gl.read());
        gl.write(bytes);
        undo.add(`put back ${g} of ${name}`, () => gl.write(old));
      }
      if (def.kernel?.reconfigure) {
        const ctx = { name, dev, hook: l.hook, params, open: (map: string) => inst.open(map) };
        undo.add(`put back what ${name} had in its maps`, () => def.kernel!.reconfigure!({ ...ctx, params: l.m.params }, params));
        def.kernel.reconfigure(ctx, l.m.params);
      }
      l.rec.hooks[l.hook] = { ...l.hr, modules: l.hr.modules.map((x) => (x.id === l.m.id ? { ...x, params } : x)) };
      writeDevice(l.rec);
      return { hook: l.hook, id: l.m.id, changed };
    } catch (e) {
      l.rec.hooks[l.hook] = l.hr;
      throw undo.rollback(e);
    } finally {
      inst.close();
    }
  });
}
