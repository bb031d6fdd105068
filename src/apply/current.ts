// What the node runs, as a NodeState: the registry's view (the kernel's chains, with the records'
// names, parameters and interests), so that a plan starts from what is, not from what was recorded.
import { resolveModule } from '../catalog.js';
import { list } from '../registry/index.js';
import { listDeviceRecords } from '../state.js';
import type { DeviceState, Instance, NodeState } from './state.js';

export async function nodeState(): Promise<NodeState> {
  const views = list();
  const recs = new Map(listDeviceRecords().map((r) => [r.ifindex, r]));
  const devices: DeviceState[] = [];
  for (const d of views) {
    const instances: Instance[] = [];
    const broken = d.hooks.filter((h) => !h.attached && h.foreignLayout === undefined).map((h) => h.hook);
    for (const h of d.hooks) {
      for (const m of h.modules) {
        // a user module loaded from a file is loaded from that file again, unless its name finds it
        const source = recs.get(d.ifindex)?.hooks[h.hook]?.modules.find((x) => x.id === m.id)?.source;
        instances.push({
          dev: d.dev,
          hook: h.hook,
          name: m.name,
          module: m.module,
          spec: source && (await sameModule(m.module, source)) === false ? source : m.module,
          priority: m.priority,
          params: m.params,
          interest: m.interest,
        });
      }
    }
    devices.push({ dev: d.dev, hooks: d.hooks.map((h) => h.hook), ...(broken.length ? { broken } : {}), instances });
  }
  return { devices };
}

/** whether the module of this name is the one in `file` */
async function sameModule(name: string, file: string): Promise<boolean> {
  try {
    return (await resolveModule(name)).file === file;
  } catch {
    return false;
  }
}
