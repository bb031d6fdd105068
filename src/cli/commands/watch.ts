import type { CommandModule } from 'yargs';
import { ItmError } from '../../errors.js';
import { devOption, hookOption, requireRoot, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  module: string;
  dev: string;
  hook?: string;
  interval?: number;
  count: number;
}

export const watchCommand: CommandModule<GlobalArgs, Args> = {
  command: 'watch <module>',
  describe: "run a module's periodic functions (class-update, controller-update) and show what they do, until interrupted",
  builder: (y) =>
    hookOption(devOption(y), 'hook (needed only if the module is on both)')
      .positional('module', { type: 'string', demandOption: true, describe: 'a loaded module instance' })
      .option('interval', { type: 'number', describe: "milliseconds between periods (default: the module's own)" })
      .option('count', { type: 'number', default: 0, describe: 'stop after N periods (0: run until interrupted)' }) as never,
  handler: async (a) => {
    requireRoot();
    const { openPeriodic } = await import('../../registry/index.js');
    const run = await openPeriodic(a.module, a.dev, a.hook as never);
    const interval = a.interval ?? run.intervalMs;
    if (!(interval >= 10)) throw new ItmError(`invalid --interval ${a.interval}: at least 10 ms`);
    let stop = false;
    const quit = () => {
      stop = true;
    };
    process.once('SIGINT', quit);
    process.once('SIGTERM', quit);
    try {
      for (let n = 1; !stop && (a.count === 0 || n <= a.count); n++) {
        await new Promise((r) => setTimeout(r, interval));
        const t = run.tick();
        if (a.json) process.stdout.write(`${JSON.stringify({ period: n, at: new Date().toISOString(), ...t })}\n`);
        else {
          const classes = t.classes
            ? Object.entries(t.classes)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ')
            : '';
          console.log(`${new Date().toISOString().slice(11, 19)} ${a.module}: ${classes}${t.changed ? `; ${t.changed}` : ''}`);
        }
      }
    } finally {
      run.close();
    }
  },
};
