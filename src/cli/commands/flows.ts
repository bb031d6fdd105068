import type { CommandModule } from 'yargs';
import { devOption, hookOption, printJson, requireRoot, table, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  module: string;
  dev: string;
  hook?: string;
  top: number;
}

export const flowsCommand: CommandModule<GlobalArgs, Args> = {
  command: 'flows <module>',
  describe: 'the per-flow state a module keeps (qos: each flow with its size and level), largest first',
  builder: (y) =>
    hookOption(devOption(y), 'hook (needed only if the module is on both)')
      .positional('module', { type: 'string', demandOption: true, describe: 'a loaded module instance' })
      .option('top', { type: 'number', default: 20, describe: 'show the N largest flows (0: all)' }) as never,
  handler: async (a) => {
    requireRoot();
    const { flows } = await import('../../registry/index.js');
    const r = await flows(a.module, a.dev, a.hook as never);
    const rows = a.top > 0 ? r.rows.slice(0, a.top) : r.rows;
    if (a.json) return printJson({ module: a.module, dev: a.dev, hook: r.hook, total: r.rows.length, flows: rows });
    console.log(
      `${a.module} on ${a.dev} ${r.hook}: ${r.rows.length} flow${r.rows.length === 1 ? '' : 's'}${rows.length < r.rows.length ? `, the ${rows.length} largest` : ''}`,
    );
    if (!rows.length) return;
    const cols = Object.keys(rows[0]!).filter((k) => !['proto', 'src', 'dst', 'sport', 'dport', 'size'].includes(k));
    const addr = (ip: string, port: number) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
    console.log(
      table(
        [
          ['proto', 'source', 'destination', ...cols],
          ...rows.map((f) => [f.proto, addr(f.src, f.sport), addr(f.dst, f.dport), ...cols.map((c) => String(f[c]))]),
        ],
        '  ',
      ),
    );
  },
};
