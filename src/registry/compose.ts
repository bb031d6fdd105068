// A hook's program, composed: the dispatcher's object linked with one copy of each kernel module
// instance of the chain (libbpf's static linker), so a module is a direct call, not two tail
// calls. Every change of the chain (load, unload, reorder) writes the idle chain table, links a
// program for it (its itm_linked), has the kernel verify it, and swaps it in on the hook in one
// step (bpf_link_update on a tcx link, a filter replace with cls_bpf, a replace at xdp): a packet
// runs wholly on the old program and its table, or wholly on the new ones.
//
// An instance's copy (kept beside the device records, `<ifindex>-<hook>-<id>.o`) is its module's
// object with every global it defines renamed `<name>__<id>`, its entry itm_run_<module> renamed
// itm_slot_<id>, and its data sections renamed `.rodata.i<id>` etc., so each is a map of its own:
// one module sits in a chain twice with its own parameters and state. At each link the entry
// takes the name of the instance's position, itm_pos_<k> (the dispatcher's weak stub of that
// name gives way to it). Its maps are pinned in its directory (mod-<id>) at its first link and
// reused from there at every later one, so flow tables and counters survive a relink.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as abi from '../abi.js';
import { dispatcherObjectPath } from '../catalog.js';
import { ItmError } from '../errors.js';
import { instanceDir } from '../instance.js';
import { BpfError, BpfMap, BpfObject, BpfProgram, linkObjects } from '../libbpf/index.js';
import { definedGlobals, renameInObject } from '../libbpf/elf.js';
import type { Hook, KernelConfig } from '../module-def.js';
import { netnsId, pinName, STATE_DIR, type HookRecord } from '../state.js';
import { attachment } from './attach.js';
import { chainBtf, writeCopyBtf } from './core-btf.js';
import { DATA_SECTIONS, reusePin, setInstanceParams } from './objects.js';
import { DISPATCHER_MAPS, u32, type HookPins } from './pins.js';
import type { Undo } from './undo.js';

/** Where the copy of the instance `id` at a hook is kept. */
export function instanceObject(ifindex: number, hook: Hook, id: number): string {
  return join(STATE_DIR, netnsId(), 'objects', `${ifindex}-${hook}-${id}.o`);
}

/** Removes the copies of the instances of a device (at `hook`, or at every hook). */
export function removeInstanceObjects(ifindex: number, hook?: Hook): void {
  const dir = join(STATE_DIR, netnsId(), 'objects');
  if (!existsSync(dir)) return;
  const prefix = hook ? `${ifindex}-${hook}-` : `${ifindex}-`;
  for (const f of readdirSync(dir)) if (f.startsWith(prefix)) rmSync(join(dir, f), { force: true });
  try {
    rmdirSync(dir);
  } catch {
    /* other devices have instances */
  }
}

/** Writes the instance's copy of its module's object (see the top of this file). */
export function writeInstanceObject(moduleObject: string, id: number, dest: string): void {
  const elf = readFileSync(moduleObject);
  const globals = definedGlobals(elf, moduleObject);
  const entries = globals.filter((g) => g.startsWith('itm_run_'));
  if (entries.length !== 1) {
    throw new ItmError(
      `${moduleObject}: ${entries.length ? 'more than one module entry' : 'no module entry (ITM_MODULE)'} in it`,
      entries.length ? undefined : 'rebuild it with the itm.h of this itm',
    );
  }
  const symbols = new Map(globals.map((g) => [g, g === entries[0] ? `itm_slot_${id}` : `${g}__${id}`]));
  const sections = new Map(DATA_SECTIONS.map((s) => [s, `${s}.i${id}`]));
  mkdirSync(join(dest, '..'), { recursive: true });
  writeFileSync(`${dest}.tmp`, renameInObject(elf, symbols, sections, moduleObject));
  renameSync(`${dest}.tmp`, dest);
  writeCopyBtf(moduleObject, dest);
}

/** The linked object's maps that are instance `id`'s, each with the name of its pin in the
 * instance's directory: its own maps under their names in C, its data sections as `_bss` etc. */
function instanceMaps(obj: BpfObject, id: number): Array<[linked: string, pin: string]> {
  const out: Array<[string, string]> = [];
  for (const n of obj.mapNames()) {
    if (n.endsWith(`__${id}`)) out.push([n, pinName(n.slice(0, -`__${id}`.length))]);
    else {
      const sec = DATA_SECTIONS.find((s) => n.endsWith(`${s}.i${id}`));
      if (sec) out.push([n, pinName(sec)]);
    }
  }
  return out;
}

/** Sets the dispatcher's globals on an object that has them (the dispatcher's, or a link of it). */
export function setDispatcherGlobals(obj: BpfObject, ifindex: number, hook: Hook): void {
  const hookId = hook === 'xdp' ? abi.ITM_HOOK_XDP : hook === 'tc-ingress' ? abi.ITM_HOOK_TC_INGRESS : abi.ITM_HOOK_TC_EGRESS;
  obj.setGlobal('itm_hook', u32(hookId));
  obj.setGlobal('itm_dev_ifindex', u32(ifindex));
  // a test knob: the slow parse path (headers outside the skb's linear part) for every packet
  if (process.env.ITM_FORCE_SLOW_PARSE === '1') obj.setGlobal('itm_force_slow', Buffer.from([1]));
}

/** A new instance's first link: its parameters, and the maps it takes from other instances (map
 * → that instance's directory). */
export interface FirstLink {
  id: number;
  module: string;
  cfg: KernelConfig;
  reuse: Map<string, string>;
}

/** The hook's programs of one link, loaded; close() when done with them. */
export interface Composed {
  dispatch: BpfProgram;
  /** xdp: the entry the pairs' itm_return tail-calls */
  returnChain?: BpfProgram;
  close(): void;
}

/**
 * Links and loads the hook's program for the chain table whose slots are `slots`: the
 * dispatcher with the kernel instances among them (`kernel`: their ids; their copies must exist),
 * each at its position. Its maps are the hook's pinned ones, each instance's its pinned ones;
 * `first`, a new instance, gets its parameters and its maps are created, then pinned.
 */
export function compose(
  hp: HookPins,
  ifindex: number,
  hook: Hook,
  slots: readonly abi.ItmSlot[],
  kernel: ReadonlySet<number>,
  first?: FirstLink,
): Composed {
  const tmp = mkdtempSync(join(tmpdir(), 'itm-link-'));
  let obj: BpfObject | undefined;
  try {
    const linked = join(tmp, 'chain.bpf.o');
    const ids: number[] = [];
    const inputs: string[] = [];
    const copies: string[] = [];
    slots.forEach((sl, k) => {
      if (!kernel.has(sl.id)) return;
      const copy = instanceObject(ifindex, hook, sl.id);
      if (!existsSync(copy))
        throw new ItmError(`the object of module id ${sl.id} on ${hook} is gone (${copy})`, 'unload it and load it again');
      const at = join(tmp, `pos-${k}.o`);
      writeFileSync(at, renameInObject(readFileSync(copy), new Map([[`itm_slot_${sl.id}`, `itm_pos_${k}`]]), new Map(), copy));
      ids.push(sl.id);
      inputs.push(at);
      copies.push(copy);
    });
    try {
      linkObjects(linked, [dispatcherObjectPath(hook), ...inputs]);
    } catch (e) {
      if (e instanceof BpfError) throw new ItmError(`cannot link the chain of ${hook}: ${e.message}`, undefined, { cause: e });
      throw e;
    }
    obj = BpfObject.open(linked, { btf: chainBtf(dispatcherObjectPath(hook), copies) });
    for (const p of obj.programNames()) obj.setAutoload(p, p === 'itm_dispatch' || p === 'itm_return_chain');
    setDispatcherGlobals(obj, ifindex, hook);
    // the table, as writeIdle put it into itm_chain: constants the verifier prunes by
    obj.setGlobal('itm_linked', abi.encode(abi.itm_chain, { n: slots.length, slots }));
    for (const m of DISPATCHER_MAPS) obj.reuseMap(m, hp.maps[m]);
    /** maps to pin in an instance's directory after the load: those it made, and those a new
     * instance takes from another (opened from the pin there) */
    const toPin: Array<[open: () => BpfMap, pin: string]> = [];
    // every instance's maps by their linked names, read before any is reused: libbpf renames a
    // reused map after the map it reuses (bpf_map__reuse_fd), which is another instance's, of
    // another id, when a module shares maps with instances elsewhere (route's nodeMaps)
    const mapsOf = new Map(ids.map((id) => [id, instanceMaps(obj!, id)]));
    for (const id of ids) {
      const dir = instanceDir(hp.dir, id);
      if (first?.id === id) setInstanceParams(obj, first.module, first.cfg, id, `__${id}`);
      for (const [linked, pin] of mapsOf.get(id)!) {
        const base = linked.endsWith(`__${id}`) ? linked.slice(0, -`__${id}`.length) : undefined;
        const from = first?.id === id && base !== undefined ? first.reuse.get(base) : undefined;
        const here = join(dir, pin);
        // a new instance's own maps are made by this load, and pinned after it
        if (from !== undefined && reusePin(obj, linked, join(from, pinName(base!)))) {
          if (!existsSync(here)) toPin.push([() => BpfMap.fromPin(join(from, pinName(base!))), here]);
          continue;
        }
        if (first?.id !== id) reusePin(obj, linked, here);
        if (!existsSync(here)) toPin.push([() => obj!.map(linked), here]);
      }
    }
    try {
      obj.load();
    } catch (e) {
      if (e instanceof BpfError) {
        const who = first ? `${first.module}: the kernel refused its program` : `the kernel refused the program of ${hook}`;
        throw new ItmError(`${who}: ${e.message}`, 'pass --verbose for the verifier log', {
          cause: e,
        });
      }
      throw e;
    }
    for (const [open, pin] of toPin) {
      const m = open();
      try {
        m.pin(pin);
      } finally {
        m.close();
      }
    }
    const dispatch = obj.program('itm_dispatch');
    const returnChain = hook === 'xdp' ? obj.program('itm_return_chain') : undefined;
    return {
      dispatch,
      ...(returnChain ? { returnChain } : {}),
      close: () => {
        dispatch.close();
        returnChain?.close();
      },
    };
  } finally {
    obj?.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Replaces a pinned program, in one rename. */
function repin(prog: BpfProgram, path: string): void {
  const next = `${path}_next`;
  rmSync(next, { force: true });
  prog.pin(next);
  renameSync(next, path);
}

/** Puts a composed program on the hook in place of the one there, in one step, and pins it as the
 * hook's; undone, the previous one goes back. */
export function swapIn(hp: HookPins, ifindex: number, hook: Hook, c: Composed, undo: Undo): void {
  const prev: Composed = {
    dispatch: BpfProgram.fromPin(join(hp.dir, 'dispatch')),
    ...(hook === 'xdp' ? { returnChain: BpfProgram.fromPin(join(hp.dir, 'return_chain')) } : {}),
    close: () => {
      prev.dispatch.close();
      prev.returnChain?.close();
    },
  };
  const at = attachment(ifindex, hook);
  const put = (p: Composed) => {
    // a hook not attached (being repaired) gets the program when it is
    if (at.current() !== undefined) at.attach(p.dispatch.fd, true);
    repin(p.dispatch, join(hp.dir, 'dispatch'));
    if (p.returnChain) {
      hp.maps.itm_progs.update(u32(abi.ITM_RETURN_IDX), u32(p.returnChain.fd));
      repin(p.returnChain, join(hp.dir, 'return_chain'));
    }
  };
  undo.add(`put the previous program back on ${hook}`, () => {
    try {
      put(prev);
    } finally {
      prev.close();
    }
  });
  put(c);
}

/** The ids of the kernel instances of a hook's record (those its program holds). */
export function kernelIds(hr: HookRecord): Set<number> {
  return new Set(hr.modules.filter((m) => m.kind !== 'user').map((m) => m.id));
}

/** The hook runs on the new program and its table: `c` swapped in, `table` recorded as the one it
 * runs on (HookPins.activate waits for the packets on the one before); undone, the old program,
 * whose table is untouched, goes back. */
export function commit(hp: HookPins, ifindex: number, hook: Hook, c: Composed, table: number, undo: Undo): void {
  const was = hp.active();
  swapIn(hp, ifindex, hook, c, undo);
  undo.add(`mark table ${was} active on ${hook}`, () => hp.activate(was));
  hp.activate(table);
}
