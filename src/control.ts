// Loading and unloading, as a command asks for them: the one place that decides whether the agent
// does it (a module it runs a part of: a user module's host, a kernel module's user data path, a
// control plane the module does not work without) or this process does, and that takes a
// module off every hook one load put it at. itmctl's load and unload call these; itmd calls the
// registry itself (it is the agent).
import { findModule, resolveModule } from './catalog.js';
import { isUserModule, type ModuleDef } from './module-def.js';
import type { UnloadResult } from './agent/protocol.js';
import type { LoadOptions, LoadResult } from './registry/index.js';

/** whether the agent runs a part of the module, and so loads and unloads it */
export function agentRuns(def: ModuleDef): boolean {
  return isUserModule(def) || def.kernel.userDatapath !== undefined || def.periodic?.essential === true;
}

/** Loads a module (at every hook of its hookSet when no hook is named): through the agent,
 * started if need be, when it runs a part of the module; else here. */
export async function loadModule(opts: LoadOptions): Promise<LoadResult> {
  const { def, file } = await resolveModule(opts.module);
  if (agentRuns(def)) {
    const { viaAgent, answer } = await import('./agent/client.js');
    return answer(await viaAgent({ op: 'load', opts: { ...opts, module: file } })).load!;
  }
  const { load } = await import('./registry/index.js');
  return load(opts);
}

/** Unloads an instance (from every hook of its hookSet when no hook is named): through the agent
 * when it runs a part of the module and is running (it stops that part first); else here. */
export async function unloadModule(name: string, dev: string, hook?: LoadOptions['hook']): Promise<UnloadResult> {
  const { list, unloadInstance } = await import('./registry/index.js');
  const at = list(dev).flatMap((d) => d.hooks.flatMap((h) => h.modules.filter((m) => (!hook || h.hook === hook) && m.name === name)));
  const def = at[0] ? await findModule(at[0].module).catch(() => undefined) : undefined;
  if (at.some((m) => m.kind === 'user') || (def && agentRuns(def))) {
    const { request } = await import('./agent/protocol.js');
    const { answer } = await import('./agent/client.js');
    const res = await request({ op: 'unload', name, dev, ...(hook ? { hook } : {}) });
    if (res) return answer(res).unload!;
  }
  return unloadInstance(name, dev, hook);
}
