import type { CommandModule } from 'yargs';
import { fileOption, planJson, readNodeFile, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  f: string;
}

export const applyCommand: CommandModule<GlobalArgs, Args> = {
  command: 'apply',
  describe:
    'make the node match a node file: load what is missing, unload what is not listed, change what differs, reorder; all or nothing',
  builder: (y) => fileOption(y) as never,
  handler: async (a) => {
    requireRoot();
    const { text, file, base } = readNodeFile(a.f);
    const { applyNode } = await import('../../apply/index.js');
    const r = await applyNode(text, file, { base });
    if (a.json) return planJson({ changes: r.changes, steps: r.plan.steps });
    if (!r.changes.length) return console.log(`nothing to change: the node matches ${file}`);
    for (const l of r.changes) console.log(l);
    console.log(`applied ${file}: ${r.changes.length} change${r.changes.length > 1 ? 's' : ''}`);
  },
};
