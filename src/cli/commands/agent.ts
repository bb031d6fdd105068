import type { CommandModule } from 'yargs';
import { ItmError } from '../../errors.js';
import { printJson, requireRoot, table, type GlobalArgs } from '../common.js';

interface Args extends GlobalArgs {
  action: string;
  etcd?: string;
  cluster?: string;
  node?: string;
  'etcd-ca'?: string;
  'etcd-cert'?: string;
  'etcd-key'?: string;
  'etcd-user'?: string;
  'etcd-password-file'?: string;
}

const FLEET = ['etcd', 'cluster', 'node', 'etcd-ca', 'etcd-cert', 'etcd-key', 'etcd-user', 'etcd-password-file'] as const;

export const agentCommand: CommandModule<GlobalArgs, Args> = {
  command: 'agent <action>',
  describe: 'the itmd agent of this network namespace: status, start, stop (itmctl load starts it for user-space modules)',
  builder: (y) =>
    y
      .positional('action', { type: 'string', choices: ['status', 'start', 'stop'], demandOption: true })
      .option('etcd', { type: 'string', describe: "start: follow a cluster's desired state in etcd (URL[,URL…])" })
      .option('cluster', { type: 'string', describe: "start --etcd: the cluster's name (keys under /itm/<cluster>/)" })
      .option('node', { type: 'string', describe: "start --etcd: this node's id in the cluster" })
      .option('etcd-ca', { type: 'string', describe: "start --etcd: the CA of etcd's TLS certificate" })
      .option('etcd-cert', { type: 'string', describe: "start --etcd: this client's TLS certificate" })
      .option('etcd-key', { type: 'string', describe: "start --etcd: this client's TLS key" })
      .option('etcd-user', { type: 'string', describe: "start --etcd: etcd's user (password auth)" })
      .option('etcd-password-file', { type: 'string', describe: 'start --etcd: a file holding the password' }) as never,
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
    const given = FLEET.filter((k) => a[k] !== undefined);
    if (given.length && a.action !== 'start') throw new ItmError(`--${given[0]} is for itmctl agent start`);
    const itmdArgs = given.flatMap((k) => [`--${k}`, String(a[k])]);
    if (a.action === 'start' && given.length && (await request({ op: 'status' })))
      throw new ItmError('itmd runs already in this network namespace', 'itmctl agent stop, then start it with --etcd');
    const r = a.action === 'start' ? await viaAgent({ op: 'status' }, itmdArgs) : await request({ op: 'status' });
    if (!r) {
      if (a.json) throw new ItmError('no itmd runs in this network namespace');
      return console.log('no itmd runs in this network namespace (itmctl agent start)');
    }
    const st = answer(r).status!;
    if (a.json) return printJson(st);
    console.log(
      `itmd pid ${st.pid}, netns ${st.netns}, since ${st.startedAt}; log ${agentPaths().log}${st.metrics ? `; metrics ${st.metrics}` : ''}`,
    );
    if (st.fleet) {
      const f = st.fleet;
      console.log(
        `  etcd ${f.endpoints.join(',')}, cluster ${f.cluster}, node ${f.node}: ${f.connected ? 'connected' : 'disconnected'} since ${f.since}${f.applied ? `; applied revision ${f.applied.revision} at ${f.applied.at}` : '; nothing applied yet'}`,
      );
      if (f.waiting) console.log(`    ${f.waiting}`);
      if (f.refused) console.log(`    refused ${f.refused.key} at ${f.refused.at}: ${f.refused.reason}`);
    }
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
