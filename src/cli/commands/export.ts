import type { CommandModule } from 'yargs';
import { requireRoot, type GlobalArgs } from '../common.js';

export const exportCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'export',
  describe: "the node's state as a node file (itmctl export | itmctl apply -f - changes nothing); --json writes it as JSON",
  handler: async (a) => {
    requireRoot();
    const { exportNode } = await import('../../apply/index.js');
    process.stdout.write(await exportNode({ json: a.json === true }));
  },
};
