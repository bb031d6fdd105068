import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { defineModule, type ParamValue, type PeriodicContext } from '../../src/module-def.js';
import { encode, registerLayouts, sumPerCpu } from '../../src/abi-codec.js';
import type { BpfMap } from '../../src/libbpf/index.js';
import * as abi from './route.abi.js';
import { loadTopology, type Topology } from './topology.js';

registerLayouts(abi.layouts);

const MAPS = ['route_peers', 'route_addrs', 'route_dests', 'route_best', 'route_tx', 'route_rx', 'route_paths', 'route_stats'];

/** the topology of a load's parameters, read again when the file changes */
const cache = new Map<string, { mtimeMs: number; t: Topology }>();
export function topologyOf(params: Record<string, ParamValue>): Topology {
  const file = String(params.topology);
  let mtimeMs = -1;
  try { mtimeMs = statSync(file).mtimeMs; } catch { /* loadTopology says what is wrong */ }
  const hit = cache.get(file);
  if (hit && hit.mtimeMs === mtimeMs) return hit.t;
  const t = loadTopology(file);
  cache.set(file, { mtimeMs, t });
  return t;
}

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; };
const ipv4 = (s: string) => Buffer.from(s.split('.').map(Number));

export interface Underlay { ifindex: number; src: string; mtu: number }

/** The underlay route to a peer's address, as this namespace's FIB has it now (undefined: none). */
export function underlayRoute(addr: string): Underlay | undefined {
  try {
    const [r] = JSON.parse(execFileSync('ip', ['-j', 'route', 'get', addr], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as Array<{ dev?: string; prefsrc?: string; type?: string }>;
    if (!r?.dev || !r.prefsrc || (r.type && r.type !== 'unicast')) return undefined;
    const [l] = JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'dev', r.dev], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as Array<{ ifindex: number; mtu: number }>;
    return l ? { ifindex: l.ifindex, src: r.prefsrc, mtu: l.mtu } : undefined;
  } catch {
    return undefined; // unreachable: `ip route get` fails
  }
}

/** A peer's entry: its key, and the underlay route to it. */
export function peerEntry(n: Topology['neighbours'][number], via: Underlay | undefined): Buffer {
  return encode(abi.route_peer, {
    key: n.key, addr: ipv4(n.address).readUInt32LE(0), key_id: n.keyId,
    ifindex: via?.ifindex ?? 0, src: via ? ipv4(via.src).readUInt32LE(0) : 0, mtu: via?.mtu ?? 0, pad: 0,
  });
}

/** The next hop a destination node starts with, before any probe: itself when it is a
 * neighbour, else the first neighbour. */
export function initialNextHop(t: Topology, dest: number): number | undefined {
  if (t.neighbours.some((n) => n.wire === dest)) return dest;
  return t.neighbours[0]?.wire;
}

/** Writes the topology into the maps the two instances share: peers and their addresses,
 * destinations, first next hops, and sequence numbers that start from the time of day, so a
 * reloaded node never repeats one its peers have seen. */
export function writeTopology(ctx: PeriodicContext & { dev: string }): void {
  const t = topologyOf(ctx.params);
  // TCP hands the device GSO super-packets (it always does, whatever the offloads), and a tag
  // cannot be made per segment: one segment per packet on this device
  execFileSync('ip', ['link', 'set', 'dev', ctx.dev, 'gso_max_segs', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const peers = ctx.open('route_peers');
  const addrs = ctx.open('route_addrs');
  const dests = ctx.open('route_dests');
  const best = ctx.open('route_best');
  const tx = ctx.open('route_tx');
  const start = BigInt(Date.now()) * 1_000_000n;
  for (const n of t.neighbours) {
    peers.update(u32(n.wire), peerEntry(n, underlayRoute(n.address)));
    for (const a of [n.address, ...n.also]) addrs.update(ipv4(a), u32(n.wire));
    if (tx.lookup(u32(n.wire)) === undefined) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(start);
      tx.update(u32(n.wire), b);
    }
  }
  for (const d of t.destinations) {
    const key = Buffer.alloc(abi.route_lpm.size);
    key.writeUInt32LE(d.prefix.family === 4 ? 96 + d.prefix.len : d.prefix.len, 0);
    d.prefix.addr.copy(key, 4);
    dests.update(key, u32(d.wire));
    const hop = initialNextHop(t, d.wire);
    if (d.wire !== t.wire && hop !== undefined && best.lookup(u32(d.wire)) === undefined) best.update(u32(d.wire), u32(hop));
  }
}

export default defineModule({
  name: 'route',
  description: 'overlay routing (itmRoute): packets for the topology\'s destinations go through an authenticated UDP tunnel, via the neighbour the probes find best',
  hooks: ['tc-ingress', 'tc-egress'],
  hookSet: ['tc-ingress', 'tc-egress'],
  kernel: { object: 'route/route.bpf.o' },
  params: {
    topology: { type: 'path', required: true, describe: 'the overlay topology file (YAML or JSON; see modules/route/README.md)' },
  },
  interestFor: (params, hook, given) => {
    const t = topologyOf(params);
    // tunnel packets arrive at tc-ingress; what leaves is the user's to narrow (by protocol and
    // port, as Divert and Spines choose traffic), within the destinations of the overlay
    if (hook !== 'tc-egress') return `proto=udp,dport=${t.port},family=4`;
    if (given?.length) return given;
    const remote = t.destinations.filter((d) => d.wire !== t.wire && d.prefix.family === 4);
    return remote.length ? remote.map((d) => `dst=${d.prefix.text}`).join(',') : `dst=0.0.0.0/32`;
  },
  configure: (params) => {
    const t = topologyOf(params);
    return { globals: { route_me: t.wire, route_port: t.port } };
  },
  sharedMaps: () => MAPS,
  init: writeTopology,
});

/** What the data path counted (route_stats, summed over CPUs). */
export type RouteCounters = { [K in keyof abi.RouteStats]: number };
export function readStats(stats: BpfMap): RouteCounters {
  const s = sumPerCpu<Record<string, bigint>>(abi.route_stats, stats, u32(0));
  return Object.fromEntries(abi.route_stats.fields.map((f) => [f.name, Number(s[f.name] ?? 0n)])) as RouteCounters;
}
