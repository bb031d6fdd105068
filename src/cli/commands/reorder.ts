import type { CommandModule } from 'yargs';
import { devOption, hookOption, printJson, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  module: string;
  dev: string;
  hook?: string;
  priority: number;
}

export const reorderCommand: CommandModule<GlobalArgs, Args> = {
  command: 'reorder <module>',
  describe: 'give a loaded module a new priority; the chain changes in one atomic switch',
  builder: (y) =>
    hookOption(devOption(y), 'hook (needed only if the module is on both)')
      .positional('module', { type: 'string', demandOption: true })
      .option('priority', { type: 'number', demandOption: 'give the new priority with --priority', describe: 'lower runs first' }) as never,
  handler: async (a) => {
    requireRoot();
    const { reorder } = await import('../../registry/index.js');
    const r = reorder(a.module, a.dev, a.priority, a.hook as never);
    if (a.json) return printJson({ module: a.module, dev: a.dev, priority: a.priority, ...r });
    console.log(`${a.module} on ${a.dev} ${r.hook}: priority ${a.priority}, now position ${r.position}`);
  },
};
