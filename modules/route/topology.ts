// The overlay's topology file (YAML, or JSON, which is YAML too): this node, its neighbours with
// their keys, the destinations the overlay reaches and the node that serves each, and the probe
// settings. It replaces itmBench's hand-edited setTopology(). Every error names the file's line.
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { isScalar, type Node } from 'yaml';
import { type Fields, ItmError, parsePrefix, type Prefix, YamlReader } from '../../src/sdk.js';
import { tagKey, type TagKey } from './tag.js';

export interface Neighbour {
  id: string;
  /** the node's id on the wire */
  wire: number;
  /** where tunnel packets to it go */
  address: string;
  /** other addresses its tunnel packets may come from (its other links) */
  also: string[];
  /** the 16-byte key it shares with this node */
  key: Buffer;
  /** the tag keys derived from it (see tag.ts) */
  tag: TagKey;
  keyId: number;
  /** the index of its sequence counter (route_tx), keys (route_keys) and replay windows
   * (route_rx), which the kernel and the user data path share: its place in the file unless the
   * file gives one (`slot:`, as itmd's views of an overlay in etcd do, so that a neighbour keeps
   * its slot when others come and go while the overlay runs) */
  slot: number;
}

export interface Destination {
  prefix: Prefix;
  node: string;
  wire: number;
}

export interface Topology {
  file: string;
  node: string;
  wire: number;
  address: string;
  /** the UDP port of the overlay, on every node */
  port: number;
  neighbours: Neighbour[];
  destinations: Destination[];
  probe: { intervalMs: number; timeoutMs: number; deadAfter: number };
}

export const DEFAULT_PORT = 7946;

/** route_peers and route_tx hold this many (route.bpf.c) */
export const MAX_NEIGHBOURS = 256;

/** A node's id on the wire: FNV-1a (32 bits) of its name; 0 is never used. */
export function wireId(name: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h || 1;
}

const KEYS = {
  top: ['node', 'address', 'port', 'neighbours', 'destinations', 'probe'],
  neighbour: ['id', 'address', 'also', 'key', 'key_id', 'slot'],
  destination: ['prefix', 'node'],
  probe: ['interval_ms', 'timeout_ms', 'dead_after'],
} as const;

/** Parses and checks a topology file; an ItmError names the line of the first problem. */
export function loadTopology(file: string): Topology {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ItmError(
      `route: cannot read topology ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`,
    );
  }
  return parseTopology(text, file);
}

export function parseTopology(text: string, file = 'topology'): Topology {
  const r = new YamlReader(text, file, 'route');
  const top = r.map(r.root, KEYS.top, 'the topology', 'node:, address:, neighbours:, destinations:');
  const me = nodeName(r, r.str(top, 'node'));
  const addrF = r.str(top, 'address');
  const address = ipv4(r, addrF.v, addrF.node, 'address');
  const port = r.int(top, 'port', 1, 65535, DEFAULT_PORT);
  // node ids by their id on the wire, which must not collide
  const seen = new Map<number, string>([[wireId(me), me]]);
  const neighbours = readNeighbours(r, top, me, address, seen);
  const destinations = readDestinations(r, top, seen);
  let probe = { intervalMs: 500, timeoutMs: 1000, deadAfter: 3 };
  const probeP = top.pairs.get('probe');
  if (probeP) {
    const f = r.map(probeP.value, KEYS.probe, "'probe'", 'interval_ms:, timeout_ms:, dead_after:');
    probe = {
      intervalMs: r.int(f, 'interval_ms', 10, 60_000, probe.intervalMs),
      timeoutMs: r.int(f, 'timeout_ms', 10, 60_000, probe.timeoutMs),
      deadAfter: r.int(f, 'dead_after', 1, 100, probe.deadAfter),
    };
  }
  return { file, node: me, wire: wireId(me), address, port, neighbours, destinations, probe };
}

function ipv4(r: YamlReader, s: string, node: Node, key: string): string {
  if (!isIPv4(s)) r.fail(node, `'${key}' ${s} is not an IPv4 address (the overlay's underlay is IPv4)`);
  return s;
}

function nodeName(r: YamlReader, { v, node }: { v: string; node: Node }): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v)) r.fail(node, `node id '${v}' must be letters, digits, '.', '-' and '_', up to 64`);
  return v;
}

/** A node's id, refused when its id on the wire is another node's. */
function claimWire(r: YamlReader, seen: Map<number, string>, id: string, node: Node, duplicate?: string): number {
  const wire = wireId(id);
  const had = seen.get(wire);
  if (had !== undefined && (had !== id || duplicate)) {
    r.fail(node, had === id ? duplicate! : `ids '${id}' and '${had}' collide on the wire: rename one`);
  }
  seen.set(wire, id);
  return wire;
}

function readNeighbours(r: YamlReader, top: Fields, me: string, address: string, seen: Map<number, string>): Neighbour[] {
  const list = r.seq(top, 'neighbours', '');
  if (!list) return r.fail(top.node, "the topology has no 'neighbours'");
  const neighbours: Neighbour[] = [];
  for (const item of list.items) {
    const f = r.map(item, KEYS.neighbour, 'a neighbour', 'id:, address:, key:');
    const idF = r.str(f, 'id');
    const id = nodeName(r, idF);
    if (id === me) r.fail(idF.node, `neighbour '${id}' is this node`);
    const wire = claimWire(r, seen, id, idF.node, `duplicate neighbour id '${id}'`);
    f.what = `neighbour '${id}'`;
    const aF = r.str(f, 'address');
    const also: string[] = [];
    for (const a of r.seq(f, 'also', 'addresses')?.items ?? []) {
      if (!isScalar(a)) r.fail(a as Node, "'also' is a list of addresses");
      also.push(ipv4(r, String(a.value), a, 'also'));
    }
    if (!f.pairs.has('key')) r.fail(f.node, `neighbour '${id}' has no 'key' (32 hex digits, shared with that node)`);
    const kF = r.str(f, 'key');
    if (!/^[0-9a-fA-F]{32}$/.test(kF.v))
      r.fail(kF.node, `the key of '${id}' must be 32 hex digits (16 bytes), e.g. from: openssl rand -hex 16`);
    if (neighbours.length >= MAX_NEIGHBOURS) r.fail(f.node, `more than ${MAX_NEIGHBOURS} neighbours: the most one node has`);
    const key = Buffer.from(kF.v, 'hex');
    neighbours.push({
      id,
      wire,
      address: ipv4(r, aF.v, aF.node, 'address'),
      also,
      key,
      tag: tagKey(key),
      keyId: r.int(f, 'key_id', 0, 255, 0),
      slot: r.int(f, 'slot', 0, MAX_NEIGHBOURS - 1, neighbours.length),
    });
    const dup = neighbours.find((x) => x.slot === neighbours[neighbours.length - 1]!.slot && x.id !== id);
    if (dup) r.fail(f.node, `neighbours '${dup.id}' and '${id}' have the same slot ${dup.slot}`);
  }
  if (!neighbours.length) r.fail(list, 'the topology lists no neighbours');
  const byAddr = new Map<string, string>([[address, me]]);
  for (const n of neighbours) {
    for (const a of [n.address, ...n.also]) {
      if (byAddr.has(a)) r.fail(list, `address ${a} is given to both '${byAddr.get(a)}' and '${n.id}'`);
      byAddr.set(a, n.id);
    }
  }
  return neighbours;
}

/** The destinations: a relay may serve and reach none of its own. */
function readDestinations(r: YamlReader, top: Fields, seen: Map<number, string>): Destination[] {
  const destinations: Destination[] = [];
  const prefixes = new Set<string>();
  for (const item of r.seq(top, 'destinations', '')?.items ?? []) {
    const f = r.map(item, KEYS.destination, 'a destination', 'prefix:, node:');
    const pF = r.str(f, 'prefix');
    const p = parsePrefix(pF.v);
    if (typeof p === 'string') return r.fail(pF.node, `bad prefix: ${p}`);
    if (p.family !== 4) r.fail(pF.node, `prefix ${p.text}: the overlay carries IPv4 packets`);
    if (prefixes.has(p.text)) r.fail(pF.node, `prefix ${p.text} is listed twice`);
    prefixes.add(p.text);
    // the node may be this one, a neighbour, or a node only neighbours reach
    f.what = `destination ${p.text}`;
    const nF = r.str(f, 'node');
    const node = nodeName(r, nF);
    destinations.push({ prefix: p, node, wire: claimWire(r, seen, node, nF.node) });
  }
  return destinations;
}
