// The overlay topology of the route tests and demo: A — N1, A — N2, N1 — B, N2 — B, A — B. A's
// client (10.40.0.1, on lo) talks to B's server (10.50.0.1); the A — B link carries the plain
// route between them, but the overlay has no direct path there, so its packets go through N1 or N2.
// With `gateway`, itmBench's placement too: a client C behind A (C — A) and a server S behind B
// (B — S), in namespaces of their own, A and B forwarding their traffic into the overlay.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Topology, TopologyDecl } from './harness/index.js';
import { itmctl, itmctlJson } from './itm.js';
import type { OverlayView } from '../modules/route/paths.js';

export const OVERLAY_HOSTS = ['a', 'n1', 'n2', 'b'] as const;
export const CLIENT = '10.40.0.1';
export const SERVER = '10.50.0.1';
/** the key a pair of nodes shares, by link: 16 bytes of n */
export const overlayKey = (n: number): string => Buffer.alloc(16, n).toString('hex');

/** C and S of the gateway placement, behind A and B */
export const GW_CLIENT = '10.40.1.2';
export const GW_SERVER = '10.50.1.2';

export function overlayDecl(o: { gateway?: boolean } = {}): TopologyDecl {
  const decl: TopologyDecl = {
    hosts: [...OVERLAY_HOSTS],
    links: [
      { a: 'a', b: 'n1', addrs: { a: ['10.31.1.1/24'], n1: ['10.31.1.2/24'] } },
      { a: 'a', b: 'n2', addrs: { a: ['10.31.2.1/24'], n2: ['10.31.2.2/24'] } },
      { a: 'n1', b: 'b', addrs: { n1: ['10.31.3.1/24'], b: ['10.31.3.2/24'] } },
      { a: 'n2', b: 'b', addrs: { n2: ['10.31.4.1/24'], b: ['10.31.4.2/24'] } },
      { a: 'a', b: 'b', addrs: { a: ['10.31.5.1/24'], b: ['10.31.5.2/24'] } },
    ],
  };
  if (!o.gateway) return decl;
  return {
    hosts: [...decl.hosts, 'c', 's'],
    links: [
      ...decl.links,
      { a: 'c', b: 'a', addrs: { c: [`${GW_CLIENT}/24`], a: ['10.40.1.1/24'] } },
      { a: 'b', b: 's', addrs: { b: ['10.50.1.1/24'], s: [`${GW_SERVER}/24`] } },
    ],
    // the plain routes between C's and S's networks go over A — B, as the ones of A's client do
    routes: {
      c: ['default via 10.40.1.1'],
      s: ['default via 10.50.1.1'],
      a: ['10.50.1.0/24 via 10.31.5.2'],
      b: ['10.40.1.0/24 via 10.31.5.1'],
    },
    forwarding: ['a', 'b'],
  };
}

/** The client and server addresses, and the plain route between them over A — B. */
export async function plainRoutes(topo: Topology): Promise<void> {
  await topo.exec('a', ['ip', 'addr', 'add', `${CLIENT}/32`, 'dev', 'lo']);
  await topo.exec('b', ['ip', 'addr', 'add', `${SERVER}/32`, 'dev', 'lo']);
  await topo.exec('a', ['ip', 'route', 'add', '10.50.0.0/24', 'via', '10.31.5.2', 'src', CLIENT]);
  await topo.exec('b', ['ip', 'route', 'add', '10.40.0.0/24', 'via', '10.31.5.1', 'src', SERVER]);
}

export interface OverlayOptions {
  /** the overlay's UDP port (default: route's, 7946) */
  port?: number;
  /** probe settings, as the topology file writes them */
  probe?: string;
  /** added to every key byte, so two overlays have different keys */
  keyBase?: number;
  /** the relays A and B have as neighbours (default both) */
  through?: Array<'n1' | 'n2'>;
  /** C's and S's networks are destinations of the overlay too (overlayDecl({ gateway: true })) */
  gateway?: boolean;
}

/** The topology file of each node. */
export function overlayFiles(o: OverlayOptions = {}): Record<(typeof OVERLAY_HOSTS)[number], string> {
  const k = (n: number) => overlayKey(n + (o.keyBase ?? 0));
  const head = (node: string, addr: string) => `node: ${node}\naddress: ${addr}\n${o.port ? `port: ${o.port}\n` : ''}`;
  const probe = o.probe ? `probe: ${o.probe}\n` : '';
  const via = o.through ?? ['n1', 'n2'];
  const nb = (lines: Record<'n1' | 'n2', string>) => via.map((n) => lines[n]).join('');
  const gw = o.gateway ? '  - { prefix: 10.40.1.0/24, node: a }\n  - { prefix: 10.50.1.0/24, node: b }\n' : '';
  return {
    a: `${head('a', '10.31.1.1')}neighbours:
${nb({ n1: `  - { id: n1, address: 10.31.1.2, key: ${k(1)} }\n`, n2: `  - { id: n2, address: 10.31.2.2, key: ${k(2)} }\n` })}destinations:
  - { prefix: 10.40.0.0/24, node: a }
  - { prefix: 10.50.0.0/24, node: b }
${gw}${probe}`,
    n1: `${head('n1', '10.31.1.2')}neighbours:
  - { id: a, address: 10.31.1.1, key: ${k(1)} }
  - { id: b, address: 10.31.3.2, key: ${k(3)} }
`,
    n2: `${head('n2', '10.31.2.2')}neighbours:
  - { id: a, address: 10.31.2.1, key: ${k(2)} }
  - { id: b, address: 10.31.4.2, key: ${k(4)} }
`,
    b: `${head('b', '10.31.3.2')}neighbours:
${nb({ n1: `  - { id: n1, address: 10.31.3.1, key: ${k(3)} }\n`, n2: `  - { id: n2, address: 10.31.4.1, key: ${k(4)} }\n` })}destinations:
  - { prefix: 10.50.0.0/24, node: b }
  - { prefix: 10.40.0.0/24, node: a }
${gw}${probe}`,
  };
}

/** Writes the files into `dir` (names starting with `prefix`) and loads route (with `args`, per
 * host if a function) on every device of every node the overlay uses. */
export async function loadOverlay(
  topo: Topology,
  dir: string,
  o: OverlayOptions = {},
  args: string[] | ((host: string) => string[]) = [],
  prefix = '',
): Promise<Record<string, string>> {
  const files = overlayFiles(o);
  const hosts = OVERLAY_HOSTS.filter((h) => !h.startsWith('n') || (o.through ?? ['n1', 'n2']).includes(h as 'n1' | 'n2'));
  const out: Record<string, string> = {};
  for (const host of hosts) {
    const file = join(dir, `${prefix}${host}.yaml`);
    writeFileSync(file, files[host]);
    out[host] = file;
    const extra = typeof args === 'function' ? args(host) : args;
    for (const d of topo.devs(host)) await itmctl(topo, host, ['load', 'route', '--dev', d.dev, '--topology', file, ...extra]);
  }
  return out;
}

/** The longest run of consecutive sequence numbers in `missing` (sorted): at 1,000 packets a
 * second, the longest outage in ms. */
export function longestRun(missing: number[]): number {
  let longest = 0;
  for (let i = 0, run = 0; i < missing.length; i++) {
    run = i > 0 && missing[i] === missing[i - 1]! + 1 ? run + 1 : 1;
    longest = Math.max(longest, run);
  }
  return longest;
}

/** `itmctl route paths` of an overlay on a host. */
export function overlayPaths(topo: Topology, host: string, name = 'route'): Promise<OverlayView> {
  return itmctlJson<OverlayView>(topo, host, ['route', 'paths', '--name', name]);
}

/** `itmctl route paths` on a host, once `until` holds of it; throws after `ms`. */
export async function pathsWhen(
  topo: Topology,
  host: string,
  until: (v: OverlayView) => boolean,
  ms = 10_000,
  name = 'route',
): Promise<OverlayView> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await overlayPaths(topo, host, name).catch((e: Error) => {
      // not loaded yet (an agent following etcd loads it in a moment)
      if (name !== 'route' && Date.now() <= end) return undefined;
      throw e;
    });
    if (v === undefined) {
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    if (until(v)) return v;
    if (Date.now() > end) throw new Error(`the paths on ${host} never got there: ${JSON.stringify(v.destinations)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
