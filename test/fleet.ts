// The route overlay of test/overlay.ts (A — N1 — B, A — N2 — B) defined in etcd, for the fleet
// tests, benchmark and demo: a host `etcd` of its own, linked to each node (10.33.<k>.0/24: etcd
// at .1, the node at .2), runs a real etcd (Debian's etcd-server) that listens on those addresses
// only; each node's itmd follows it (itmd --etcd). Everything lives in the harness's namespaces
// and goes with them: etcd and the agents are killed by their PIDs, etcd's data directory removed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ITMD_JS } from '../src/agent/client.js';
import type { AgentStatus } from '../src/agent/protocol.js';
import { viewsDir } from '../src/fleet/desired.js';
import type { NsProcess, Topology, TopologyDecl } from './harness/index.js';
import { itmctlJson } from './itm.js';
import { OVERLAY_HOSTS, overlayDecl } from './overlay.js';

export type Node = (typeof OVERLAY_HOSTS)[number];
/** etcd's address on its link to each node */
export const ETCD_ADDR: Record<Node, string> = { a: '10.33.1.1', n1: '10.33.2.1', n2: '10.33.3.1', b: '10.33.4.1' };
export const etcdUrl = (n: Node): string => `http://${ETCD_ADDR[n]}:2379`;

export function fleetDecl(): TopologyDecl {
  const d = overlayDecl();
  return {
    ...d,
    hosts: [...d.hosts, 'etcd'],
    links: [
      ...d.links,
      ...OVERLAY_HOSTS.map((n) => ({
        a: 'etcd',
        b: n,
        addrs: { etcd: [`${ETCD_ADDR[n]}/24`], [n]: [`${ETCD_ADDR[n].replace(/\.1$/, '.2')}/24`] },
      })),
    ],
  };
}

/** A real etcd in the topology's `etcd` host, on its addresses there; stopped and its data
 * removed when the topology goes. */
export class Etcd {
  proc?: NsProcess;
  private readonly dir = mkdtempSync(join(tmpdir(), 'itm-etcd-'));
  constructor(private readonly topo: Topology) {
    topo.onDestroy(async () => {
      await this.stop();
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  async start(): Promise<void> {
    const urls = OVERLAY_HOSTS.map(etcdUrl).join(',');
    const peer = 'http://127.0.0.1:2380';
    this.proc = this.topo.spawn('etcd', [
      'etcd',
      '--name=itmt',
      `--data-dir=${this.dir}`,
      `--listen-client-urls=${urls}`,
      `--advertise-client-urls=${urls}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=itmt=${peer}`,
      '--log-level=error',
    ]);
    for (let i = 0; ; i++) {
      const r = await this.ctl(['endpoint', 'health'], undefined, false);
      if (r.code === 0) return;
      if (!this.proc.running || i > 100) throw new Error(`etcd did not start: ${this.proc.stderr.slice(-500)}`);
      await sleep(100);
    }
  }

  async stop(): Promise<void> {
    await this.proc?.stop(2000);
    this.proc = undefined;
  }

  /** etcdctl in the etcd host, against its first address; `input` is the value of a put */
  async ctl(args: string[], input?: string, check = true): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return this.topo.exec('etcd', ['etcdctl', `--endpoints=${etcdUrl('a')}`, '--dial-timeout=1s', ...args], {
      check,
      ...(input !== undefined ? { input } : {}),
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  }

  put(key: string, value: string): Promise<unknown> {
    return this.ctl(['put', key], value);
  }
}

/** The cluster of one run: its name, its keys, and the agents that follow it. */
export class Fleet {
  readonly agents = new Map<Node, NsProcess>();
  constructor(
    readonly topo: Topology,
    readonly etcd: Etcd,
    readonly cluster = `itmt${process.pid}`,
  ) {
    // the views itmd wrote for this cluster (the agents are stopped before this runs)
    topo.onDestroy(() => rmSync(dirname(viewsDir(this.cluster, 'x')), { recursive: true, force: true }));
  }
  key = (rel: string): string => `/itm/${this.cluster}/${rel}`;

  /** Starts itmd --etcd on a node (killed with the topology). */
  startAgent(n: Node): NsProcess {
    const p = this.topo.spawn(n, [process.execPath, ITMD_JS, '--no-metrics', '--etcd', etcdUrl(n), '--cluster', this.cluster, '--node', n]);
    this.agents.set(n, p);
    return p;
  }

  status(n: Node): Promise<AgentStatus> {
    return itmctlJson<AgentStatus>(this.topo, n, ['agent', 'status']);
  }

  /** Waits until `until` holds of a node's agent status; throws after `ms`. */
  async statusWhen(n: Node, until: (s: AgentStatus) => boolean, ms = 15_000): Promise<AgentStatus> {
    const end = Date.now() + ms;
    for (;;) {
      const s = await this.status(n).catch(() => undefined);
      if (s && until(s)) return s;
      if (Date.now() > end) throw new Error(`${n}'s agent never got there: ${JSON.stringify(s?.fleet)}`);
      await sleep(100);
    }
  }
}

export const SECRET = 'ab'.repeat(32);
export const PROBE = '{ interval_ms: 100, timeout_ms: 300, dead_after: 3 }';

/** The overlay, with N1 and, if asked, N2 as relays; route on every overlay device of each. */
export function overlayDoc(topo: Topology, o: { relays: Array<'n1' | 'n2'>; probe?: string }): string {
  const devs = (n: Node) =>
    `[${topo
      .devs(n)
      .filter((d) => d.peer !== 'etcd')
      .map((d) => d.dev)
      .join(', ')}]`;
  const has = (r: 'n1' | 'n2') => o.relays.includes(r);
  return `secret: ${SECRET}
probe: ${o.probe ?? PROBE}
members:
  a: { devices: ${devs('a')}, serves: [10.40.0.0/24] }
  b: { devices: ${devs('b')}, serves: [10.50.0.0/24] }
${has('n1') ? `  n1: { devices: ${devs('n1')} }\n` : ''}${has('n2') ? `  n2: { devices: ${devs('n2')} }\n` : ''}links:
${has('n1') ? '  - { a: 10.31.1.1, n1: 10.31.1.2 }\n  - { n1: 10.31.3.1, b: 10.31.3.2 }\n' : ''}${has('n2') ? '  - { a: 10.31.2.1, n2: 10.31.2.2 }\n  - { n2: 10.31.4.1, b: 10.31.4.2 }\n' : ''}`;
}
