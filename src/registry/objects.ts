// A kernel module's object: loaded with its parameters (globals, map sizes), sharing the
// dispatcher's maps and those of instances it goes with, its maps and program pinned, its init run.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ItmError } from '../errors.js';
import { BpfError, BpfMap, BpfObject, ifIndexToName } from '../libbpf/index.js';
import { ModuleInstance } from '../instance.js';
import type { Hook, KernelConfig, KernelModuleDef, ParamValue } from '../module-def.js';
import { modPinDir, pinName, type DeviceRecord } from '../state.js';
import { SHARED_MAPS, type HookPins } from './pins.js';
import { namedInstances } from './records.js';

/** The data sections of a module's object, each one map, pinned as `_rodata`, `_data`, `_bss`. */
export const DATA_SECTIONS = ['.rodata', '.data', '.bss'] as const;

/** A global's value as the bytes of a global of `size` bytes: a number in its own size, a buffer
 * cut or padded to it. */
export function globalBytes(v: number | bigint | Buffer, size: number): Buffer {
  const buf = Buffer.alloc(size);
  if (Buffer.isBuffer(v)) {
    v.copy(buf, 0, 0, size);
    return buf;
  }
  const big = BigInt(v);
  if (size === 8) buf.writeBigUInt64LE(BigInt.asUintN(64, big));
  else buf.writeUIntLE(Number(BigInt.asUintN(size * 8, big)), 0, size);
  return buf;
}

/** Sets an instance's parameters (its globals, `itm_module_id`, its map sizes) on an object that
 * holds it, its globals and maps named `<name><suffix>`. */
export function setInstanceParams(obj: BpfObject, module: string, cfg: KernelConfig, id: number, suffix = ''): void {
  const globals: Record<string, number | bigint | Buffer> = { ...cfg.globals, itm_module_id: id };
  for (const [name, v] of Object.entries(globals)) {
    const info = obj.globalInfo(name + suffix);
    if (!info) throw new ItmError(`${module}: its object has no global '${name}'`);
    obj.setGlobal(name + suffix, globalBytes(v, info.size));
  }
  for (const [m, n] of Object.entries(cfg.maxEntries ?? {})) obj.setMaxEntries(m + suffix, n);
}

/** Makes the object use the map pinned at `pin` for its map `name`, if there is one there; before
 * load() only. */
export function reusePin(obj: BpfObject, name: string, pin: string): boolean {
  if (!existsSync(pin)) return false;
  const m = BpfMap.fromPin(pin);
  try {
    obj.reuseMap(name, m);
  } finally {
    m.close();
  }
  return true;
}

/** Loads a kernel module's object on its own, for its maps (its user data path runs in place of
 * its program): with its parameters, sharing the dispatcher's maps (and those of `reuse`, map →
 * the pin directory of the instance that has it), its maps pinned in `modDir`. */
export function loadModuleObject(
  def: KernelModuleDef,
  objPath: string,
  cfg: KernelConfig,
  id: number,
  hp: HookPins,
  modDir: string,
  reuse: Map<string, string>,
): void {
  const obj = BpfObject.open(objPath);
  try {
    setInstanceParams(obj, def.name, cfg, id);
    // only its maps: its entry is a function for the hook's program, not a program of its own
    for (const p of obj.programNames()) obj.setAutoload(p, false);
    for (const m of SHARED_MAPS) obj.reuseMap(m, hp.maps[m]);
    for (const [m, dir] of reuse) {
      if (!reusePin(obj, m, join(dir, pinName(m)))) throw new ItmError(`${def.name}: the map ${m} it shares is gone from ${dir}`);
    }
    try {
      obj.load();
    } catch (e) {
      if (e instanceof BpfError)
        throw new ItmError(`${def.name}: the kernel refused its program: ${e.message}`, 'pass --verbose for the verifier log', {
          cause: e,
        });
      throw e;
    }
    for (const m of obj.mapNames()) {
      if ((SHARED_MAPS as readonly string[]).includes(m)) continue;
      const map = obj.map(m);
      map.pin(join(modDir, pinName(DATA_SECTIONS.find((s) => m.endsWith(s)) ?? m)));
      map.close();
    }
  } finally {
    obj.close();
  }
}

/** The maps a new instance takes from instances already loaded: its `sharedMaps` from its sibling
 * on the device's other hook, its `nodeMaps` from any instance of its name in the namespace (which
 * must have its parameters: they are one instance, on several devices). */
export function reusedMaps(
  def: KernelModuleDef,
  name: string,
  params: Record<string, ParamValue>,
  rec: DeviceRecord,
  hook: Hook,
): Map<string, string> {
  const reuse = new Map<string, string>();
  const other: Hook | undefined = hook === 'tc-ingress' ? 'tc-egress' : hook === 'tc-egress' ? 'tc-ingress' : undefined;
  const sibling = other && rec.hooks[other]?.modules.find((x) => x.name === name && x.module === def.name);
  if (sibling) for (const m of def.kernel.sharedMaps?.(params) ?? []) reuse.set(m, modPinDir(rec.ifindex, other, sibling.id));
  const node = def.kernel.nodeMaps?.(params) ?? [];
  if (!node.length) return reuse;
  const first = namedInstances(name).next();
  if (first.done) return reuse;
  const { r, h, m } = first.value;
  const where = `${ifIndexToName(r.ifindex) ?? `ifindex ${r.ifindex}`} ${h}`;
  if (m.module !== def.name) throw new ItmError(`${name} is another module (${m.module}) on ${where}: load this one with another --name`);
  if (JSON.stringify(m.params) !== JSON.stringify(params)) {
    throw new ItmError(
      `${name} is loaded on ${where} with other parameters (${JSON.stringify(m.params)}): its instances on this node share their maps, so they take the same ones (or load another with --name)`,
    );
  }
  for (const map of node) if (!reuse.has(map)) reuse.set(map, modPinDir(r.ifindex, h, m.id));
  return reuse;
}

/** Runs a kernel module's `init` on its freshly pinned maps. */
export function initModule(
  def: KernelModuleDef,
  name: string,
  params: Record<string, ParamValue>,
  modDir: string,
  dev: string,
  hook: Hook,
): void {
  const inst = new ModuleInstance(modDir);
  try {
    def.kernel.init!({ name, params, dev, hook, open: (map) => inst.open(map) });
  } catch (e) {
    if (e instanceof ItmError) throw e;
    throw new ItmError(`${def.name}: cannot fill its maps: ${(e as Error).message}`, undefined, { cause: e });
  } finally {
    inst.close();
  }
}
