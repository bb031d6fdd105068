// A loaded instance's TypeScript functions, outside the per-packet path: its periodic functions
// (class-update, controller-update), its per-flow state, and its maps for a module's own commands.
import { ItmError } from '../errors.js';
import { ifIndexToName } from '../libbpf/index.js';
import { findModule, kernelObjectPath } from '../catalog.js';
import { ModuleInstance } from '../instance.js';
import type { FlowRow, Hook, ParamValue, PeriodicContext } from '../module-def.js';
import { hasMaps, readDevice, withNamespaceLock } from '../state.js';
import { enterNamespace } from './cleanup.js';
import { resolveDevice } from './devices.js';
import { findLoaded, namedInstances } from './records.js';

export interface PeriodicInstance {
  module: string;
  hook: Hook;
  intervalMs: number;
  /** one period: class-update's figures, then what controller-update changed */
  tick(): { classes?: Record<string, number | string>; changed?: string };
  close(): void;
}

/** The periodic functions (class-update, controller-update) of a loaded module instance, ready to
 * be run by whatever keeps running: `itmctl watch` for now. */
export async function openPeriodic(name: string, dev: string, hook?: Hook): Promise<PeriodicInstance> {
  const ifindex = resolveDevice(dev, `run the periodic functions of ${name} on`);
  const { h, m } = withNamespaceLock(() => {
    enterNamespace(false);
    const found = findLoaded(readDevice(ifindex), name, dev, hook);
    return { h: found.hook, m: found.m };
  });
  const def = await findModule(m.module);
  if (!def.periodic) throw new ItmError(`${name} (${m.module}) has no periodic functions`);
  const every = def.periodic;
  const inst = ModuleInstance.of(ifindex, h, m.id, kernelObjectPath(def, h));
  const ctx: PeriodicContext = {
    name,
    dev,
    hook: h,
    params: m.params,
    state: {} as Record<string, unknown>,
    open: (map) => inst.open(map),
    global: (g) => inst.global(g),
  };
  return {
    module: m.module,
    hook: h,
    intervalMs: every.intervalMs,
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
export function nodeInstance(name: string): {
  dev: string;
  hook: Hook;
  module: string;
  params: Record<string, ParamValue>;
  instance: ModuleInstance;
} {
  const hit = withNamespaceLock(() => {
    enterNamespace(false);
    for (const x of namedInstances(name)) if (hasMaps(x.m)) return x;
    return undefined;
  });
  if (!hit) throw new ItmError(`${name} is not loaded in this network namespace`);
  return {
    dev: ifIndexToName(hit.r.ifindex) ?? `ifindex ${hit.r.ifindex}`,
    hook: hit.h,
    module: hit.m.module,
    params: hit.m.params,
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
  if (!def.kernel?.flows) throw new ItmError(`${name} (${m.module}) keeps no per-flow state to show`);
  const inst = ModuleInstance.of(ifindex, h, m.id);
  try {
    const rows = def.kernel.flows((map) => inst.open(map), m.params);
    return { hook: h, module: m.module, rows: rows.sort((a, b) => b.size - a.size) };
  } finally {
    inst.close();
  }
}
