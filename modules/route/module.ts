import { statSync } from 'node:fs';
import {
  decode,
  defineModule,
  ItmError,
  registerLayouts,
  sumPerCpu,
  type BpfMap,
  type ParamValue,
  type InitContext,
} from '../../src/sdk.js';
import { datapathOf, type UserDatapath } from './datapath.js';
import * as abi from './route.abi.js';
import { controllerFor, stopController } from './control.js';
import { ipv4, peerEntry, u32, underlayRoutes } from './peers.js';
import { keyEntry } from './tag.js';
import { loadTopology, type Topology } from './topology.js';

registerLayouts(abi.layouts);

const MAPS = [
  'route_peers',
  'route_keys',
  'route_addrs',
  'route_dests',
  'route_best',
  'route_tx',
  'route_rx',
  'route_paths',
  'route_stats',
  'route_ustats',
];
const DATAPATHS = ['kernel', 'user'];

/** the topology of a load's parameters, read again when the file changes */
const cache = new Map<string, { mtimeMs: number; t: Topology }>();
export function topologyOf(params: Record<string, ParamValue>): Topology {
  const file = String(params.topology);
  let mtimeMs = -1;
  try {
    mtimeMs = statSync(file).mtimeMs;
  } catch {
    /* loadTopology says what is wrong */
  }
  const hit = cache.get(file);
  if (hit && hit.mtimeMs === mtimeMs) return hit.t;
  const t = loadTopology(file);
  cache.set(file, { mtimeMs, t });
  return t;
}

/** The next hop a destination node starts with, before any probe: itself when it is a
 * neighbour, else the first neighbour. */
export function initialNextHop(t: Topology, dest: number): number | undefined {
  if (t.neighbours.some((n) => n.wire === dest)) return dest;
  return t.neighbours[0]?.wire;
}

/** an LPM key of route_dests: an IPv4 prefix, IPv4-mapped */
function lpmKey(d: Topology['destinations'][number]): Buffer {
  const key = Buffer.alloc(abi.route_lpm.size);
  key.writeUInt32LE(d.prefix.family === 4 ? 96 + d.prefix.len : d.prefix.len, 0);
  d.prefix.addr.copy(key, 4);
  return key;
}

/**
 * Makes the maps the instances share say what the topology says: peers, their tag keys and
 * addresses, destinations, first next hops. At init (fresh maps) that is writing it; given a new
 * topology while the overlay runs (ParamSpec.live, through `reconfigure`), it is a change in
 * place: what the new one has is written, what only the maps have is deleted, and the program,
 * its chain slot and every other neighbour's counters, windows and paths are left as they are.
 * A neighbour new at its slot starts its sequence numbers from the time of day (never below the
 * slot's last, so a reloaded node never repeats one its peers have seen) and its replay windows
 * afresh.
 */
export function writeTopology(ctx: InitContext): void {
  const t = topologyOf(ctx.params);
  const peers = ctx.open('route_peers');
  const keys = ctx.open('route_keys');
  const addrs = ctx.open('route_addrs');
  const dests = ctx.open('route_dests');
  const best = ctx.open('route_best');
  const tx = ctx.open('route_tx');
  const rx = ctx.open('route_rx');
  const paths = ctx.open('route_paths');
  const start = BigInt(Date.now()) * 1_000_000n;
  const routes = underlayRoutes(t.neighbours.map((n) => n.address));
  const slotOf = new Map(peers.entries().map(([k, v]) => [k.readUInt32LE(0), decode<abi.RoutePeer>(abi.route_peer, v).slot]));
  const wires = new Set(t.neighbours.map((n) => n.wire));
  // who goes, first: no packet is tagged for a peer after its entry is gone
  for (const w of slotOf.keys()) if (!wires.has(w)) peers.delete(u32(w));
  const owner = new Map(t.neighbours.flatMap((n) => [n.address, ...n.also].map((a) => [ipv4(a).readUInt32LE(0), n.wire] as const)));
  for (const [k, v] of addrs.entries()) if (owner.get(k.readUInt32LE(0)) !== v.readUInt32LE(0)) addrs.delete(k);
  t.neighbours.forEach((n, i) => {
    const fresh = slotOf.get(n.wire) !== n.slot;
    keys.update(u32(n.slot), keyEntry(n.tag));
    if (fresh) {
      const was = tx.lookup(u32(n.slot))?.readBigUInt64LE(0) ?? 0n;
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(was > start ? was : start);
      tx.update(u32(n.slot), b);
      const zero = Buffer.alloc(abi.route_window.size);
      for (const k of [n.slot * 2, n.slot * 2 + 1]) rx.update(u32(k), zero);
    }
    // the keys and windows before the peer: its first packet finds them
    peers.update(u32(n.wire), peerEntry(n, routes[i]));
    for (const a of [n.address, ...n.also]) addrs.update(ipv4(a), u32(n.wire));
  });
  const lpm = new Set(t.destinations.map((d) => lpmKey(d).toString('hex')));
  for (const k of dests.keys()) if (!lpm.has(k.toString('hex'))) dests.delete(k);
  const destWires = new Set(t.destinations.map((d) => d.wire).filter((w) => w !== t.wire));
  for (const d of t.destinations) dests.update(lpmKey(d), u32(d.wire));
  // a next hop that is no longer a neighbour goes back to the first choice, until the probes say
  for (const [k, v] of best.entries()) {
    const dest = k.readUInt32LE(0);
    if (!destWires.has(dest)) best.delete(k);
    else if (!wires.has(v.readUInt32LE(0))) best.delete(k);
  }
  for (const dest of destWires) {
    const hop = initialNextHop(t, dest);
    if (hop !== undefined && best.lookup(u32(dest)) === undefined) best.update(u32(dest), u32(hop));
  }
  // the control plane's figures of paths that no longer exist
  for (const k of paths.keys()) {
    const p = decode<abi.RoutePathKey>(abi.route_path_key, k);
    if (!destWires.has(p.dest) || !wires.has(p.via || p.dest) || p.via === p.dest) paths.delete(k);
  }
}

/** What a new topology cannot change in place: the node's id and port are the program's
 * constants (route_me, route_port). */
function whyReloadTopology(from: Record<string, ParamValue>, to: Record<string, ParamValue>): string | undefined {
  if (from.topology === to.topology) return undefined;
  let a: Topology;
  let b: Topology;
  try {
    a = topologyOf(from);
  } catch {
    return 'its running topology cannot be read';
  }
  try {
    b = topologyOf(to);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  if (a.node !== b.node) return `the node's id changes (${a.node} → ${b.node})`;
  if (a.port !== b.port) return `the overlay's port changes (${a.port} → ${b.port})`;
  return undefined;
}

export default defineModule({
  name: 'route',
  description:
    "overlay routing (itmRoute): packets for the topology's destinations go through an authenticated UDP tunnel, via the neighbour the probes find best",
  hooks: ['tc-ingress', 'tc-egress'],
  params: {
    topology: {
      type: 'path',
      required: true,
      describe: 'the overlay topology file (YAML or JSON; see modules/route/README.md)',
      // another file (another view of the overlay, from itmd --etcd) is written into the maps in
      // place; the node's id and port are not (whyReload)
      live: true,
    },
    datapath: {
      type: 'string',
      default: 'kernel',
      describe:
        "where packets are encapsulated, checked and decapsulated: 'kernel' (eBPF at tc) or 'user' (TypeScript, in itmd, over AF_XDP)",
    },
  },
  interestFor: (params, hook, given) => {
    const t = topologyOf(params);
    // tunnel packets arrive at tc-ingress; what leaves is the user's to narrow (by protocol and
    // port, as Divert and Spines choose traffic), within the destinations of the overlay
    if (hook !== 'tc-egress') return `proto=udp,dport=${t.port},family=4`;
    const remote = t.destinations.filter((d) => d.wire !== t.wire && d.prefix.family === 4);
    const dsts = remote.length ? remote.map((d) => `dst=${d.prefix.text}`) : ['dst=0.0.0.0/32'];
    // within the destinations even when narrowed: the slot's interest is what the dispatcher cuts
    // super-packets for, so the device's other traffic keeps its GSO (see perSegment)
    if (given?.length) return given.some((g) => /(^|,)\s*dst=/.test(g)) ? given : [...given, ...dsts];
    return dsts.join(',');
  },
  periodic: {
    intervalMs: 250,
    essential: true,
    // the probes run on the controller's own timer (the topology's interval); this call keeps it
    // told which instances are here, and reports what it changed
    controllerUpdate: (ctx) => controllerFor(ctx, topologyOf(ctx.params)).attach(ctx),
    classUpdate: (ctx) => {
      const c = controllerFor(ctx, topologyOf(ctx.params));
      const out: Record<string, string> = {};
      for (const [dest, hop] of c.best) {
        const p = c.paths.find((x) => x.dest === dest && x.hop === hop);
        if (p) out[c.name(dest)] = `${c.way(p)}${p.srttUs !== undefined ? ` ${(p.srttUs / 1000).toFixed(2)} ms` : ''}`;
      }
      return out;
    },
    stop: stopController,
  },
  kernel: {
    object: 'route/route.bpf.o',
    hookSet: ['tc-ingress', 'tc-egress'],
    configure: (params) => {
      if (!DATAPATHS.includes(String(params.datapath)))
        throw new ItmError(`route: invalid --datapath '${String(params.datapath)}': use kernel or user`);
      const t = topologyOf(params);
      return { globals: { route_me: t.wire, route_port: t.port } };
    },
    // every packet on the wire gets its own sequence number and tag: a GSO super-packet for the
    // overlay (a host's TCP with TSO, forwarded TCP after GRO) is cut into its segments first, by
    // the kernel, and each is encapsulated on its own; the device's other traffic keeps its GSO
    perSegment: true,
    // one overlay node, whatever devices it is loaded on: one set of peers, paths, sequence numbers
    // and replay windows (a peer's packets may arrive on any of them)
    nodeMaps: () => MAPS,
    init: writeTopology,
    reconfigure: writeTopology,
    whyReload: whyReloadTopology,
    // --datapath user: the object is loaded for its maps (the control plane is the same), and these
    // functions do what its program does
    userDatapath: {
      when: (params) => params.datapath === 'user',
      // a packet for the overlay that cannot reach the user data path (its host restarting, behind)
      // is dropped: past it, it would leave unencapsulated, outside the overlay
      failClosed: true,
      start: (ctx) => {
        datapathOf(ctx, topologyOf(ctx.params));
      },
      process: (pkt, _cls, ctx) => (ctx.state.datapath as UserDatapath).process(pkt, ctx.hook === 'tc-egress'),
    },
  },
});

/** What the data path counted: the kernel's (route_stats, summed over CPUs) and the user data
 * path's (route_ustats), one node's. */
export type RouteCounters = { [K in keyof abi.RouteStats]: number };
export function readStats(open: (map: string) => BpfMap): RouteCounters {
  const k = sumPerCpu<Record<string, bigint>>(abi.route_stats, open('route_stats'), u32(0));
  const uv = open('route_ustats').lookup(u32(0));
  const u = uv ? decode<Record<string, bigint>>(abi.route_stats, uv) : {};
  return Object.fromEntries(abi.route_stats.fields.map((f) => [f.name, Number((k[f.name] ?? 0n) + (u[f.name] ?? 0n))])) as RouteCounters;
}
