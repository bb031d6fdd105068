// A hook's dispatcher: set up (created, adopted from an earlier run, or repaired), its record made
// to agree with the kernel, and taken down. Every step adds its undo to the caller's transaction.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as abi from '../abi.js';
import { ItmError } from '../errors.js';
import { BpfMap, BpfObject, BpfProgram, tc } from '../libbpf/index.js';
import { dispatcherObjectPath } from '../catalog.js';
import { removeDivert } from '../divert.js';
import { ensureSegmenter, removeSegmenter, segmenterIntact } from '../segment.js';
import { DEFAULT_HOOKS, HOOKS, type Hook } from '../module-def.js';
import {
  hookPinDir,
  netnsId,
  readDevice,
  removeDevice,
  withNamespaceLock,
  writeDevice,
  type DeviceRecord,
  type HookRecord,
} from '../state.js';
import { log } from '../log.js';
import { attachment, recordedKind } from './attach.js';
import { enterNamespace, purgeModule, tidy } from './cleanup.js';
import { progName, requireEthernet, resolveDevice, tcFiltersRemain } from './devices.js';
import { DISPATCHER_MAPS, HookPins, u32 } from './pins.js';
import { ADOPTED, DEFAULT_PRIORITY, needsSegmenter } from './records.js';
import { Undo } from './undo.js';
import { objectBtf } from './core-btf.js';
import { removeInstanceObjects, setDispatcherGlobals } from './compose.js';

export type UpOutcome = 'created' | 'adopted' | 'repaired';

/** Loads and pins a fresh dispatcher for one hook (into a temporary dir, renamed when complete). */
function createDispatcher(ifindex: number, hook: Hook, undo: Undo): HookPins {
  const dir = hookPinDir(ifindex, hook);
  const tmp = `${dir}-tmp-${process.pid}`; // bpffs refuses names with a dot
  // half-made trees from a crash: the hook's own, and temporary ones of any earlier run
  const parent = join(dir, '..');
  if (existsSync(parent)) {
    for (const e of readdirSync(parent)) if (e.startsWith(`${hook}-tmp-`)) rmSync(join(parent, e), { recursive: true, force: true });
  }
  mkdirSync(tmp, { recursive: true });
  undo.add(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  // a tcx link outlives the tree it is pinned in only by moving to the new one: removed, it would
  // take the (older) dispatcher it holds off the hook, and a new link would lose its place there
  if (existsSync(join(dir, 'link'))) {
    renameSync(join(dir, 'link'), join(tmp, 'link'));
    undo.add(`put the tcx link pin back in ${dir}`, () => {
      if (!existsSync(join(tmp, 'link'))) return;
      mkdirSync(dir, { recursive: true });
      renameSync(join(tmp, 'link'), join(dir, 'link'));
    });
  }
  rmSync(dir, { recursive: true, force: true });
  removeInstanceObjects(ifindex, hook);
  const obj = BpfObject.open(dispatcherObjectPath(hook), { btf: objectBtf(dispatcherObjectPath(hook)) });
  try {
    setDispatcherGlobals(obj, ifindex, hook);
    obj.load();
    for (const m of DISPATCHER_MAPS) {
      const map = obj.map(m);
      map.pin(join(tmp, m));
      map.close();
    }
    const dispatch = obj.program('itm_dispatch');
    dispatch.pin(join(tmp, 'dispatch'));
    // xdp: runs on the pairs of the hook's user modules (see bpf/divert.bpf.c), and goes on in
    // the hook's program of the moment (return_chain); tc: on the far end of the hook's
    // segmentation pair (src/segment.ts)
    const extra =
      hook === 'xdp'
        ? [
            ['itm_return', 'return'],
            ['itm_return_chain', 'return_chain'],
          ]
        : [['itm_from_seg', 'from_seg'], ...(hook === 'tc-ingress' ? [['itm_from_gro', 'from_gro']] : [])];
    for (const [prog, pin] of extra) {
      const ep = obj.program(prog!);
      ep.pin(join(tmp, pin!));
      ep.close();
    }
    if (hook === 'xdp') {
      const progs = BpfMap.fromPin(join(tmp, 'itm_progs'));
      const ret = BpfProgram.fromPin(join(tmp, 'return_chain'));
      progs.update(u32(abi.ITM_RETURN_IDX), u32(ret.fd));
      ret.close();
      progs.close();
    }
    // a returning packet's trailer must carry the secret (see struct itm_trailer)
    const ctl = BpfMap.fromPin(join(tmp, 'itm_ctl'));
    ctl.update(u32(0), abi.encode(abi.itm_ctl, { active: 0, generation: 0, secret: randomBytes(4).readUInt32LE(0) }));
    ctl.close();
    const layout = BpfMap.fromPin(join(tmp, 'itm_layout'));
    layout.update(u32(0), u32(abi.ITM_LAYOUT_VERSION));
    layout.close();
    dispatch.close();
  } finally {
    obj.close();
  }
  mkdirSync(join(dir, '..'), { recursive: true });
  renameSync(tmp, dir);
  undo.add(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return HookPins.open(dir)!;
}

/** Puts the hook's dispatcher at its place on the device, unless it is there: an older itm
 * dispatcher there is replaced, a program of anyone else's is never touched. True if it changed
 * anything. */
function attachDispatcher(
  rec: DeviceRecord,
  dev: string,
  hook: Hook,
  pins: HookPins,
  recorded: 'tcx' | 'cls_bpf' | undefined,
  undo: Undo,
): boolean {
  const at = attachment(rec.ifindex, hook, { recorded });
  if (at.kind !== 'xdp') rec.hooks[hook]!.attach = at.kind;
  const attached = at.current();
  if (attached === pins.dispatch.id) return false;
  if (attached !== undefined && progName(attached) !== 'itm_dispatch') {
    throw new ItmError(`cannot set up ${dev} ${hook}: ${at.taken(attached, progName(attached))}`);
  }
  if (at.prepare()) {
    rec.createdClsact = true;
    undo.add(`remove clsact from ${dev}`, () => tc.hookDestroy(rec.ifindex));
  }
  if (attached === undefined) {
    at.attach(pins.dispatch.fd, false);
    undo.add(`detach from ${dev} ${hook}`, () => at.detach());
  } else {
    const old = BpfProgram.fromId(attached);
    at.attach(pins.dispatch.fd, true);
    undo.add(`put the earlier dispatcher back on ${dev} ${hook}`, () => {
      try {
        at.attach(old.fd, true);
      } finally {
        old.close();
      }
    });
  }
  return true;
}

/** Sets the hooks up (the caller holds the namespace lock and owns the transaction). */
export function upLocked(dev: string, ifindex: number, hooks: readonly Hook[], undo: Undo): Record<string, UpOutcome> {
  enterNamespace(true);
  requireEthernet(dev);
  const ns = netnsId();
  const rec: DeviceRecord = readDevice(ifindex) ?? { dev, ifindex, netns: ns, createdClsact: false, hooks: {} };
  rec.dev = dev;
  const out: Record<string, UpOutcome> = {};
  for (const hook of hooks) {
    let pins = HookPins.open(hookPinDir(ifindex, hook));
    let outcome: UpOutcome = 'adopted';
    const recorded = hook === 'xdp' ? undefined : recordedKind(rec.hooks[hook]);
    if (!pins) {
      pins = createDispatcher(ifindex, hook, undo);
      outcome = rec.hooks[hook] ? 'repaired' : 'created';
      rec.hooks[hook] = { modules: [], nextSeq: 1 };
    }
    try {
      rec.hooks[hook] ??= { modules: [], nextSeq: 1 };
      const hr = rec.hooks[hook];
      reconcileRecord(hr, pins);
      let repaired = false;
      // a segmentation pair someone removed would swallow the super-packets sent into it
      if (hook !== 'xdp' && needsSegmenter(hr) && !segmenterIntact(ifindex, hook, pins.maps.itm_segctl)) {
        ensureSegmenter(ifindex, hook, pins.dir, pins.maps.itm_segctl, undo.add);
        repaired = true;
      }
      if (attachDispatcher(rec, dev, hook, pins, recorded, undo)) repaired = true;
      if (repaired && outcome === 'adopted') outcome = 'repaired';
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
export function reconcileRecord(hr: HookRecord, pins: HookPins): void {
  const chain = pins.chain();
  const live = new Set(chain.map((s) => s.id));
  for (const m of hr.modules.filter((x) => !live.has(x.id))) {
    log.info(`dropping ${m.name} (id ${m.id}) from the record: it is not in the kernel's chain`);
  }
  hr.modules = hr.modules.filter((x) => live.has(x.id));
  chain.forEach((s, i) => {
    if (hr.modules.some((m) => m.id === s.id)) return;
    // the composed program does not say which module a slot runs: the id makes the name unique
    const module = 'module';
    const name = `${module}-${s.id}`;
    hr.modules.push({
      id: s.id,
      name,
      module,
      priority: DEFAULT_PRIORITY,
      seq: hr.nextSeq + i,
      params: {},
      interest: ADOPTED,
      loadedAt: '',
    });
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

export interface DownResult {
  hooks: Hook[];
  unloaded: string[];
  clsactRemoved: boolean;
}

export function down(dev: string, hooks: readonly Hook[] = HOOKS): DownResult {
  const ifindex = resolveDevice(dev, 'take down');
  return withNamespaceLock(() => {
    enterNamespace(false);
    const rec = readDevice(ifindex);
    const res: DownResult = { hooks: [], unloaded: [], clsactRemoved: false };
    for (const hook of hooks) {
      const dir = hookPinDir(ifindex, hook);
      // whatever the layout of the tree (down is how one of another itm's is removed): only the
      // dispatcher's id is read from it
      const ours = HookPins.dispatchId(dir);
      // detach only our own: the program at itm's place running an itm dispatcher (at tc, at
      // either place: itm's tcx link and itm's cls_bpf filter)
      const places =
        hook === 'xdp'
          ? [attachment(ifindex, hook)]
          : [attachment(ifindex, hook, { kind: 'tcx' }), attachment(ifindex, hook, { kind: 'cls_bpf' })];
      let detached = false;
      for (const at of places) {
        const id = at.current();
        if (id !== undefined && (id === ours || progName(id) === 'itm_dispatch')) {
          at.detach();
          detached = true;
        }
      }
      if (existsSync(dir) || detached) res.hooks.push(hook);
      if (existsSync(dir)) {
        res.unloaded.push(...(rec?.hooks[hook]?.modules.map((m) => `${m.name} (${hook})`) ?? []));
        for (let i = 0; i < abi.ITM_MAX_SLOTS; i++) removeDivert(ifindex, hook, i);
        if (hook !== 'xdp') removeSegmenter(ifindex, hook);
        rmSync(dir, { recursive: true, force: true });
        removeInstanceObjects(ifindex, hook);
      }
      // the record follows each hook, so a failure on the next one leaves it true
      if (rec?.hooks[hook]) {
        delete rec.hooks[hook];
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
