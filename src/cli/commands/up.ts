import type { CommandModule } from 'yargs';
import { DEFAULT_HOOKS } from '../../module-def.js';
import { devOption, hookOption, hooksOf, printJson, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  dev: string;
  hook?: string;
}

export const upCommand: CommandModule<GlobalArgs, Args> = {
  command: 'up',
  describe: 'attach the dispatcher to a device (tc ingress and egress; xdp with --hook xdp); adopts or repairs what is there',
  builder: (y) => hookOption(devOption(y), 'only this hook') as never,
  handler: async (a) => {
    requireRoot();
    const { up } = await import('../../registry/index.js');
    const res = up(a.dev, hooksOf(a.hook, DEFAULT_HOOKS));
    if (a.json) return printJson({ dev: a.dev, hooks: res });
    for (const [hook, outcome] of Object.entries(res)) console.log(`${a.dev} ${hook}: dispatcher ${outcome}`);
  },
};
