// The overlay's topology file (YAML, or JSON, which is YAML too): this node, its neighbours with
// their keys, the destinations the overlay reaches and the node that serves each, and the probe
// settings. It replaces itmBench's hand-edited setTopology(). Every error names the file's line.
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Node, type Pair, type YAMLMap } from 'yaml';
import { ItmError, parsePrefix, type Prefix } from '../../src/sdk.js';
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
  /** its place in the file: the index of its sequence counter (route_tx) and replay windows
   * (route_rx), which the kernel and the user data path share */
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
  neighbour: ['id', 'address', 'also', 'key', 'key_id'],
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
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const at = (n: Node | Pair | null | undefined): string => {
    const off =
      n && 'range' in n && n.range
        ? n.range[0]
        : (n as Pair | undefined)?.key && isScalar((n as Pair).key)
          ? ((n as Pair).key as Node).range?.[0]
          : undefined;
    return off === undefined ? file : `${file}:${lines.linePos(off).line}`;
  };
  const fail = (n: Node | Pair | null | undefined, msg: string): never => {
    throw new ItmError(`route: ${at(n)}: ${msg}`);
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new ItmError(`route: ${file}:${lines.linePos(e.pos[0]).line}: ${e.message.split('\n')[0]}`);
  }
  const root = doc.contents;
  if (!isMap(root)) return fail(root, 'the topology is a mapping (node:, address:, neighbours:, destinations:)');

  /** the pairs of a mapping, with unknown keys refused */
  const fields = (m: YAMLMap, allowed: readonly string[], what: string): Map<string, Pair> => {
    const out = new Map<string, Pair>();
    for (const p of m.items) {
      const k = isScalar(p.key) ? String(p.key.value) : undefined;
      if (k === undefined || !allowed.includes(k))
        fail(p.key as Node, `unknown key '${k ?? '?'}' in ${what} (keys: ${allowed.join(', ')})`);
      out.set(k!, p);
    }
    return out;
  };
  const scalar = (f: Map<string, Pair>, key: string, parent: Node, what: string): { v: unknown; node: Node } => {
    const p = f.get(key);
    if (!p) return fail(parent, `${what} has no '${key}'`);
    if (!isScalar(p.value)) return fail((p.value as Node) ?? p, `'${key}' must be a single value`);
    return { v: p.value.value, node: p.value };
  };
  const str = (f: Map<string, Pair>, key: string, parent: Node, what: string): { v: string; node: Node } => {
    const { v, node } = scalar(f, key, parent, what);
    if (typeof v !== 'string' && typeof v !== 'number') return fail(node, `'${key}' must be text`);
    // as written: a key of hex digits only would otherwise read as a number
    return { v: typeof v === 'number' ? ((node as { source?: string }).source ?? String(v)) : v, node };
  };
  const int = (f: Map<string, Pair>, key: string, parent: Node, lo: number, hi: number, dflt: number): number => {
    if (!f.has(key)) return dflt;
    const { v, node } = scalar(f, key, parent, key);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
      return fail(node, `'${key}' must be an integer from ${lo} to ${hi}`);
    return v;
  };
  const ipv4 = (s: string, node: Node, key: string): string => {
    if (!isIPv4(s)) fail(node, `'${key}' ${s} is not an IPv4 address (the overlay's underlay is IPv4)`);
    return s;
  };
  const nodeName = (s: string, node: Node): string => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(s)) fail(node, `node id '${s}' must be letters, digits, '.', '-' and '_', up to 64`);
    return s;
  };

  const top = fields(root, KEYS.top, 'the topology');
  const me = nodeName(str(top, 'node', root, 'the topology').v, top.get('node')!.value as Node);
  const addrF = str(top, 'address', root, 'the topology');
  const address = ipv4(addrF.v, addrF.node, 'address');
  const port = int(top, 'port', root, 1, 65535, DEFAULT_PORT);

  const neighbours: Neighbour[] = [];
  const seen = new Map<number, string>([[wireId(me), me]]);
  const nbSeq = top.get('neighbours')?.value;
  if (!nbSeq) fail(root, "the topology has no 'neighbours'");
  if (!isSeq(nbSeq)) return fail(nbSeq as Node, "'neighbours' is a list");
  for (const item of nbSeq.items) {
    if (!isMap(item)) return fail(item as Node, 'a neighbour is a mapping (id:, address:, key:)');
    const f = fields(item, KEYS.neighbour, 'a neighbour');
    const idF = str(f, 'id', item, 'a neighbour');
    const id = nodeName(idF.v, idF.node);
    if (id === me) fail(idF.node, `neighbour '${id}' is this node`);
    const wire = wireId(id);
    if (seen.has(wire))
      fail(
        idF.node,
        seen.get(wire) === id ? `duplicate neighbour id '${id}'` : `ids '${id}' and '${seen.get(wire)}' collide on the wire: rename one`,
      );
    seen.set(wire, id);
    const aF = str(f, 'address', item, `neighbour '${id}'`);
    const also: string[] = [];
    const alsoP = f.get('also');
    if (alsoP) {
      if (!isSeq(alsoP.value)) fail(alsoP.value as Node, "'also' is a list of addresses");
      for (const a of (alsoP.value as { items: unknown[] }).items) {
        if (!isScalar(a)) fail(a as Node, "'also' is a list of addresses");
        also.push(ipv4(String((a as { value: unknown }).value), a as Node, 'also'));
      }
    }
    const kF = f.has('key')
      ? str(f, 'key', item, `neighbour '${id}'`)
      : fail(item, `neighbour '${id}' has no 'key' (32 hex digits, shared with that node)`);
    if (!/^[0-9a-fA-F]{32}$/.test(kF.v))
      fail(kF.node, `the key of '${id}' must be 32 hex digits (16 bytes), e.g. from: openssl rand -hex 16`);
    if (neighbours.length >= MAX_NEIGHBOURS) fail(item, `more than ${MAX_NEIGHBOURS} neighbours: the most one node has`);
    neighbours.push({
      id,
      wire,
      address: ipv4(aF.v, aF.node, 'address'),
      also,
      key: Buffer.from(kF.v, 'hex'),
      tag: tagKey(Buffer.from(kF.v, 'hex')),
      keyId: int(f, 'key_id', item, 0, 255, 0),
      slot: neighbours.length,
    });
  }
  if (!neighbours.length) fail(nbSeq, 'the topology lists no neighbours');
  const byAddr = new Map<string, string>([[address, me]]);
  for (const n of neighbours) {
    for (const a of [n.address, ...n.also]) {
      if (byAddr.has(a)) fail(nbSeq, `address ${a} is given to both '${byAddr.get(a)}' and '${n.id}'`);
      byAddr.set(a, n.id);
    }
  }

  const destinations: Destination[] = [];
  // a relay may serve and reach no destination of its own
  const dSeq = top.get('destinations')?.value ?? null;
  if (dSeq !== null && !isSeq(dSeq)) return fail(dSeq as Node, "'destinations' is a list");
  const prefixes = new Map<string, string>();
  for (const item of dSeq?.items ?? []) {
    if (!isMap(item)) return fail(item as Node, 'a destination is a mapping (prefix:, node:)');
    const f = fields(item, KEYS.destination, 'a destination');
    const pF = str(f, 'prefix', item, 'a destination');
    const p = parsePrefix(pF.v);
    if (typeof p === 'string') fail(pF.node, `bad prefix: ${p}`);
    const prefix = p as Prefix;
    if (prefix.family !== 4) fail(pF.node, `prefix ${prefix.text}: the overlay carries IPv4 packets`);
    if (prefixes.has(prefix.text)) fail(pF.node, `prefix ${prefix.text} is listed twice`);
    // the node may be this one, a neighbour, or a node only neighbours reach
    const nF = str(f, 'node', item, `destination ${prefix.text}`);
    const node = nodeName(nF.v, nF.node);
    const wire = wireId(node);
    if (seen.has(wire) && seen.get(wire) !== node) fail(nF.node, `ids '${node}' and '${seen.get(wire)}' collide on the wire: rename one`);
    seen.set(wire, node);
    prefixes.set(prefix.text, node);
    destinations.push({ prefix, node, wire });
  }

  const probeP = top.get('probe');
  let probe = { intervalMs: 500, timeoutMs: 1000, deadAfter: 3 };
  if (probeP) {
    if (!isMap(probeP.value)) fail(probeP.value as Node, "'probe' is a mapping (interval_ms:, timeout_ms:, dead_after:)");
    const pm = probeP.value as YAMLMap;
    const f = fields(pm, KEYS.probe, "'probe'");
    probe = {
      intervalMs: int(f, 'interval_ms', pm, 10, 60_000, probe.intervalMs),
      timeoutMs: int(f, 'timeout_ms', pm, 10, 60_000, probe.timeoutMs),
      deadAfter: int(f, 'dead_after', pm, 1, 100, probe.deadAfter),
    };
  }
  return { file, node: me, wire: wireId(me), address, port, neighbours, destinations, probe };
}
