import type { CommandModule } from 'yargs';
import { devOption, hookOption, hooksOf, printJson, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  dev: string;
  hook?: string;
  flow: string[];
}

export const explainCommand: CommandModule<GlobalArgs, Args> = {
  command: 'explain <flow..>',
  describe: 'which modules would see a flow on a device, in what order, and why the others would not',
  builder: (y) =>
    hookOption(devOption(y), 'only this hook').positional('flow', {
      type: 'string',
      array: true,
      describe: 'proto=udp,src=A,dst=B,sport=N,dport=N[,indev=DEV][,origin=local|forwarded]',
    }) as never,
  handler: async (a) => {
    requireRoot();
    const { explain, resolveDevice } = await import('../../registry/index.js');
    const { parseFlow } = await import('../flow.js');
    const flow = parseFlow(a.flow.join(','), (n) => resolveDevice(n, 'match indev'));
    const res = explain(a.dev, flow, hooksOf(a.hook));
    if (a.json) return printJson(res);
    for (const h of res) {
      console.log(`${h.dev} ${h.hook}:`);
      if (!h.steps.length) console.log('  no modules');
      let n = 0;
      for (const s of h.steps) {
        console.log(s.sees ? `  ${++n}. ${s.name} sees it` : `  -  ${s.name} does not: ${s.why}`);
      }
    }
  },
};
