import type { CommandModule } from 'yargs';
import { devOption, hookOption, hooksOf, printJson, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  dev: string;
  hook?: string;
}

export const downCommand: CommandModule<GlobalArgs, Args> = {
  command: 'down',
  describe: 'unload every module and remove the dispatcher from a device, leaving no filter, program, map or pin',
  builder: (y) => hookOption(devOption(y), 'only this hook') as never,
  handler: async (a) => {
    requireRoot();
    const { down } = await import('../../registry/index.js');
    const res = down(a.dev, hooksOf(a.hook));
    if (a.json) return printJson({ dev: a.dev, ...res });
    if (!res.hooks.length) return console.log(`${a.dev}: nothing of itm was there`);
    if (res.unloaded.length) console.log(`${a.dev}: unloaded ${res.unloaded.join(', ')}`);
    console.log(
      `${a.dev}: dispatcher removed from ${res.hooks.join(' and ')}${res.clsactRemoved ? ' (and the clsact qdisc itm had added)' : ''}`,
    );
  },
};
