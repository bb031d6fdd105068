import type { CommandModule } from 'yargs';
import { devOption, hookOption, printJson, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  module: string;
  dev: string;
  hook?: string;
}

export const unloadCommand: CommandModule<GlobalArgs, Args> = {
  command: 'unload <module>',
  describe: "take a module out of a hook's chain and unload it; the other modules go on undisturbed",
  builder: (y) =>
    hookOption(devOption(y), 'hook (needed only if the module is on both)').positional('module', {
      type: 'string',
      demandOption: true,
    }) as never,
  handler: async (a) => {
    requireRoot();
    const { unloadModule } = await import('../../control.js');
    const r = await unloadModule(a.module, a.dev, a.hook as never);
    if (a.json) return printJson({ module: a.module, dev: a.dev, ...r });
    for (const x of [...(r.others ?? []), r]) console.log(`${a.module} unloaded from ${a.dev} ${x.hook}`);
  },
};
