import type { CommandModule } from 'yargs';
import { ItmError } from '../../errors.js';
import { printJson, requireRoot, table, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  action: string;
}

export const agentCommand: CommandModule<GlobalArgs, Args> = {
  command: 'agent <action>',
  describe: 'the itmd agent of this network namespace: status, start, stop (itmctl load starts it for user-space modules)',
  builder: (y) => y.positional('action', { type: 'string', choices: ['status', 'start', 'stop'], demandOption: true }) as never,
  handler: async (a) => {
    requireRoot();
    const { request, agentPaths } = await import('../../agent/protocol.js');
    const { viaAgent, answer } = await import('../../agent/client.js');
    if (a.action === 'stop') {
      const r = await request({ op: 'shutdown' });
      if (a.json) return printJson({ stopped: r !== undefined });
      return console.log(
        r
          ? 'itmd is stopping (kernel modules keep running; user-space modules are bypassed until it is back)'
          : 'no itmd runs in this network namespace',
      );
    }
    const r = a.action === 'start' ? await viaAgent({ op: 'status' }) : await request({ op: 'status' });
    if (!r) {
      if (a.json) throw new ItmError('no itmd runs in this network namespace');
      return console.log('no itmd runs in this network namespace (itmctl agent start)');
    }
    const st = answer(r).status!;
    if (a.json) return printJson(st);
    console.log(
      `itmd pid ${st.pid}, netns ${st.netns}, since ${st.startedAt}; log ${agentPaths().log}${st.metrics ? `; metrics ${st.metrics}` : ''}`,
    );
    if (st.hosts.length) {
      console.log('  user-space modules:');
      console.log(
        table(
          [
            ['name', 'module', 'dev', 'hook', 'state', 'pid', 'restarts', 'last exit'],
            ...st.hosts.map((h) => [h.name, h.module, h.dev, h.hook, h.state, String(h.pid ?? '-'), String(h.restarts), h.lastExit ?? '-']),
          ],
          '    ',
        ),
      );
    }
    if (st.periodic.length) {
      console.log('  periodic functions:');
      console.log(
        table(
          [
            ['name', 'module', 'dev', 'hook', 'every', 'runs', 'last'],
            ...st.periodic.map((p) => [
              p.name,
              p.module,
              p.dev,
              p.hook,
              `${p.intervalMs} ms`,
              String(p.runs),
              p.last?.error ? `error: ${p.last.error}` : (p.last?.changed ?? (p.last?.classes ? JSON.stringify(p.last.classes) : '-')),
            ]),
          ],
          '    ',
        ),
      );
    }
  },
};
