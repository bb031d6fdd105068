// What `itmctl route paths` shows: per destination node, every path the control plane probes,
// with its RTT, loss and whether the kernel uses it, and what the data path counted. Read from the
// overlay's pinned maps, so it works whether or not the controller runs.
import { decode, type BpfMap, type ParamValue } from '../../src/sdk.js';
import * as abi from './route.abi.js';
import { u32 } from './peers.js';
import { readStats, topologyOf, type RouteCounters } from './module.js';

export interface PathView {
  /** the neighbour it goes through, or 'direct' */
  via: string;
  rtt_ms: number | null;
  /** lost probes, smoothed, 0..1 */
  loss: number;
  sent: number;
  answered: number;
  alive: boolean;
  in_use: boolean;
  /** since its last answer; null for never */
  last_answer_ms: number | null;
}
export interface DestinationView {
  node: string;
  prefixes: string[];
  next_hop: string | null;
  paths: PathView[];
}
export interface OverlayView {
  node: string;
  port: number;
  topology: string;
  datapath: 'kernel' | 'user';
  destinations: DestinationView[];
  stats: RouteCounters;
}

export function overlayView(open: (map: string) => BpfMap, params: Record<string, ParamValue>): OverlayView {
  const t = topologyOf(params);
  const names = new Map<number, string>([
    [t.wire, t.node],
    ...t.neighbours.map((n) => [n.wire, n.id] as [number, string]),
    ...t.destinations.map((d) => [d.wire, d.node] as [number, string]),
  ]);
  const name = (w: number) => names.get(w) ?? `#${w}`;
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as the controller stamps answers
  const rows = open('route_paths')
    .entries()
    .map(([k, v]) => ({ k: decode<abi.RoutePathKey>(abi.route_path_key, k), v: decode<abi.RoutePath>(abi.route_path, v) }));
  // only the paths of this topology: a controller that ran an earlier one may have left others
  const hops = new Set(t.neighbours.map((n) => n.wire));
  const probed = (k: abi.RoutePathKey) => hops.has(k.via || k.dest) && k.via !== k.dest;
  const best = open('route_best');
  const dests = [...new Set(t.destinations.map((d) => d.wire))].filter((w) => w !== t.wire);
  return {
    node: t.node,
    port: t.port,
    topology: t.file,
    datapath: params.datapath === 'user' ? 'user' : 'kernel',
    destinations: dests.map((d) => {
      const hop = best.lookup(u32(d))?.readUInt32LE(0);
      return {
        node: name(d),
        prefixes: t.destinations.filter((x) => x.wire === d).map((x) => x.prefix.text),
        next_hop: hop === undefined ? null : hop === d ? 'direct' : name(hop),
        paths: rows
          .filter((r) => r.k.dest === d && probed(r.k))
          .sort((a, b) => a.k.via - b.k.via)
          .map(({ k, v }) => ({
            via: k.via ? name(k.via) : 'direct',
            rtt_ms: v.answered ? Math.round(v.rtt_us) / 1000 : null,
            loss: v.loss_pm / 1000,
            sent: v.sent,
            answered: v.answered,
            alive: v.alive === 1,
            in_use: v.in_use === 1,
            last_answer_ms: v.last_answer_ns ? Number((now - BigInt(v.last_answer_ns)) / 1_000_000n) : null,
          })),
      };
    }),
    stats: readStats(open),
  };
}
