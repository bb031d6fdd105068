import type { CommandModule } from 'yargs';
import { fileOption, planJson, readNodeFile, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  f: string;
}

export const diffCommand: CommandModule<GlobalArgs, Args> = {
  command: 'diff',
  describe: 'what itmctl apply -f FILE would change, in the order it would; changes nothing',
  builder: (y) => fileOption(y) as never,
  handler: async (a) => {
    requireRoot();
    const { text, file, base } = readNodeFile(a.f);
    const { applyNode } = await import('../../apply/index.js');
    const r = await applyNode(text, file, { base, dryRun: true });
    if (a.json) return planJson({ changes: r.changes, steps: r.plan.steps });
    if (!r.changes.length) return console.log(`no changes: the node matches ${file}`);
    for (const l of r.changes) console.log(l);
  },
};
