// What the registry records of a hook's modules (src/state.ts keeps it), and the questions asked
// of it: the chain's order, whether a hook needs its segmentation pair, where an instance is.
import { ItmError } from '../errors.js';
import { HOOKS, type Hook } from '../module-def.js';
import { listDeviceRecords, type DeviceRecord, type HookRecord, type ModuleRecord } from '../state.js';

export const DEFAULT_PRIORITY = 50;
/** the interest of a module found in the kernel with no record of how it was loaded */
export const ADOPTED = '?';

/** whether a module of the hook must see super-packets as segments (see src/segment.ts) */
export const needsSegmenter = (hr: HookRecord) => hr.modules.some((m) => m.segments === true || m.kind === 'user');

export const chainOrder = (mods: ModuleRecord[]) => [...mods].sort((a, b) => a.priority - b.priority || a.seq - b.seq);

/** The hook and record of the instance `name` on a device (at `hook`, if given). */
export function findLoaded(rec: DeviceRecord | undefined, name: string, dev: string, hook?: Hook): { hook: Hook; m: ModuleRecord } {
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

/** Every instance loaded under `name` in the namespace, device by device, in hook order. */
export function* namedInstances(name: string): Generator<{ r: DeviceRecord; h: Hook; m: ModuleRecord }> {
  for (const r of listDeviceRecords()) {
    for (const h of HOOKS) {
      const m = r.hooks[h]?.modules.find((x) => x.name === name);
      if (m) yield { r, h, m };
    }
  }
}
