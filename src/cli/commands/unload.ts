import type { CommandModule } from 'yargs';
import { devOption, hookOption, printJson, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs { module: string; dev: string; hook?: string }

export const unloadCommand: CommandModule<GlobalArgs, Args> = {
  command: 'unload <module>',
  describe: 'take a module out of a hook\'s chain and unload it; the other modules go on undisturbed',
  builder: (y) => hookOption(devOption(y), 'hook (needed only if the module is on both)').positional('module', { type: 'string', demandOption: true }) as never,
  handler: async (a) => {
    requireRoot();
    const { unload, unloadSet, list } = await import('../../registry.js');
    const { findModule } = await import('../../catalog.js');
    const { isUserModule } = await import('../../module-def.js');
    const at = list(a.dev).flatMap((d) => d.hooks.flatMap((h) => h.modules.filter((m) => (!a.hook || h.hook === a.hook) && m.name === a.module)));
    // the same rule as load's: a module the agent runs a part of (a user module's host, a user
    // data path, a control plane) is unloaded by the agent, which stops that part first
    const def = at[0] ? await findModule(at[0].module).catch(() => undefined) : undefined;
    const viaAgent = at.some((m) => m.kind === 'user') || (def !== undefined && (isUserModule(def) || def.userDatapath !== undefined || def.every?.essential === true));
    let r;
    if (viaAgent) {
      // its host stops first (sends back what is in flight, flushes); through the agent if one runs
      const { request } = await import('../../agent/protocol.js');
      const { answer } = await import('../../agent/client.js');
      const res = await request({ op: 'unload', name: a.module, dev: a.dev, ...(a.hook ? { hook: a.hook as never } : {}) });
      if (res) r = answer(res).unload!;
    }
    if (!r) {
      // a module that one load put at several hooks (route) comes off them all
      const all = a.hook ? undefined : await unloadSet(a.module, a.dev);
      if (all) {
        if (a.json) return printJson({ module: a.module, dev: a.dev, unloaded: all });
        for (const x of all) console.log(`${a.module} unloaded from ${a.dev} ${x.hook}`);
        return;
      }
      r = unload(a.module, a.dev, a.hook as never);
    }
    if (a.json) return printJson({ module: a.module, dev: a.dev, ...r });
    const others: Array<{ hook: string }> = 'others' in r && Array.isArray(r.others) ? r.others : [];
    for (const x of [...others, r]) console.log(`${a.module} unloaded from ${a.dev} ${x.hook}`);
  },
};
