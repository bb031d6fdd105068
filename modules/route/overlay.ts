// An overlay defined once, for all its members (what itmd --etcd reads from a cluster's
// `overlays/<name>` key): its members, the links between them with each end's underlay address,
// the prefixes each member serves, the probe settings, and one secret the pairs' keys come from.
// Each member derives its own view of it, a topology file as route reads it (topology.ts).
//
//   port: 7946                                  # optional, as in a topology file
//   probe: { interval_ms: 500, timeout_ms: 1000, dead_after: 3 }
//   secret: <64 hex digits>                     # the pairs' keys: HKDF-SHA256 (pairKey)
//   members:
//     a:  { devices: [eth0, eth1], serves: [10.40.0.0/24] }
//     n1: { devices: [eth0, eth1] }             # serves nothing: a relay
//   links:                                      # neighbours, with each end's address on the link
//     - { a: 10.31.1.1, n1: 10.31.1.2 }
//     - { n1: 10.31.3.1, b: 10.31.3.2, key: <32 hex>, key_id: 1 }   # a key of its own
//
// A member that serves prefixes has every member's prefixes as its destinations; a relay has
// none (it forwards what its neighbours send through it, and answers probes).
import { hkdfSync } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { Document, isMap, isScalar, type Node } from 'yaml';
import { ItmError, parsePrefix, type Prefix, YamlReader } from '../../src/sdk.js';
import { MAX_NEIGHBOURS, parseTopology, type Topology } from './topology.js';

export interface Member {
  id: string;
  /** the devices of the member route is loaded on (as one `itmctl load` puts it on each) */
  devices: string[];
  serves: Prefix[];
  /** its address in its own view (default: its address on its first link) */
  address?: string;
  priority?: number;
}

export interface Link {
  ends: [{ id: string; address: string }, { id: string; address: string }];
  key?: Buffer;
  keyId: number;
}

export interface Overlay {
  name: string;
  file: string;
  port?: number;
  probe?: { interval_ms: number; timeout_ms: number; dead_after: number };
  secret?: Buffer;
  members: Map<string, Member>;
  links: Link[];
}

const TOP = ['port', 'probe', 'secret', 'members', 'links'];
const MEMBER = ['devices', 'serves', 'address', 'priority'];
const PROBE = ['interval_ms', 'timeout_ms', 'dead_after'];
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * The key a pair of members shares when its link gives none: HKDF-SHA256 (RFC 5869) of the
 * overlay's secret, salt `itm route overlay`, info the overlay's name and the two ids in sorted
 * order, a NUL byte after each; 16 bytes. Either end derives the same key, nobody without the
 * secret derives any, and one pair's key says nothing of another's.
 */
export function pairKey(secret: Buffer, overlay: string, a: string, b: string): Buffer {
  const [lo, hi] = [a, b].sort();
  const info = Buffer.from(`${overlay}\0${lo}\0${hi}\0`);
  return Buffer.from(hkdfSync('sha256', secret, Buffer.from('itm route overlay'), info, 16));
}

const ipv4 = (r: YamlReader, v: string, n: Node, what: string): string => {
  if (!isIPv4(v)) r.fail(n, `${what} ${v} is not an IPv4 address (the overlay's underlay is IPv4)`);
  return v;
};

/** Reads and checks an overlay (`file` names it in messages: the etcd key it came from), each of
 * its members' views too, so that one that passes here is taken by every member alike. */
export function parseOverlay(text: string, name: string, file: string): Overlay {
  if (!ID.test(name)) throw new ItmError(`${file}: overlay name '${name}' must be letters, digits, '.', '-' and '_', up to 64`);
  const r: YamlReader = new YamlReader(text, file, '');
  const top = r.map(r.root, TOP, 'the overlay', 'members:, links:, secret:');
  const o: Overlay = { name, file, members: new Map(), links: [] };
  if (top.pairs.has('port')) o.port = r.int(top, 'port', 1, 65535, 0);
  const probeP = top.pairs.get('probe');
  if (probeP) {
    const f = r.map(probeP.value, PROBE, "'probe'", 'interval_ms:, timeout_ms:, dead_after:');
    o.probe = {
      interval_ms: r.int(f, 'interval_ms', 10, 60_000, 500),
      timeout_ms: r.int(f, 'timeout_ms', 10, 60_000, 1000),
      dead_after: r.int(f, 'dead_after', 1, 100, 3),
    };
  }
  if (top.pairs.has('secret')) {
    const s = r.str(top, 'secret');
    if (!/^[0-9a-fA-F]{64}$/.test(s.v)) r.fail(s.node, "'secret' must be 64 hex digits (32 bytes), e.g. from: openssl rand -hex 32");
    o.secret = Buffer.from(s.v, 'hex');
  }
  const ms = top.pairs.get('members')?.value as Node | undefined;
  if (!ms) r.fail(top.node, "the overlay has no 'members'");
  if (!isMap(ms)) r.fail(ms, "'members' is a mapping of member ids to what each has (devices:, serves:)");
  const mf = r.map(
    ms,
    ms.items.map((p) => (isScalar(p.key) ? String(p.key.value) : '?')),
    "'members'",
    'id: { devices: [...] }',
  );
  for (const [id, p] of mf.pairs) {
    if (!ID.test(id)) r.fail(p.key as Node, `member id '${id}' must be letters, digits, '.', '-' and '_', up to 64`);
    const f = r.map(p.value, MEMBER, `member '${id}'`, 'devices:, serves:, address:, priority:');
    const devices = (r.seq(f, 'devices', 'device names')?.items ?? []).map((d) => {
      if (!isScalar(d) || typeof d.value !== 'string' || !d.value) r.fail(d as Node, "'devices' is a list of device names");
      return d.value as string;
    });
    if (!devices.length) r.fail(f.node, `member '${id}' names no 'devices' (those of its devices route is loaded on)`);
    const serves = (r.seq(f, 'serves', 'prefixes')?.items ?? []).map((d) => {
      const p = isScalar(d) ? parsePrefix(String(d.value)) : 'a prefix, like 10.40.0.0/24';
      if (typeof p === 'string') return r.fail(d as Node, `bad prefix: ${p}`);
      if (p.family !== 4) r.fail(d as Node, `prefix ${p.text}: the overlay carries IPv4 packets`);
      return p;
    });
    const m: Member = { id, devices, serves };
    if (f.pairs.has('address')) {
      const a = r.str(f, 'address');
      m.address = ipv4(r, a.v, a.node, `member '${id}': 'address'`);
    }
    if (f.pairs.has('priority')) m.priority = r.int(f, 'priority', 0, 1000, 50);
    o.members.set(id, m);
  }
  if (o.members.size < 2) r.fail(ms, 'an overlay has at least two members');
  const prefixes = new Map<string, string>();
  for (const m of o.members.values())
    for (const p of m.serves) {
      if (prefixes.has(p.text)) r.fail(ms, `prefix ${p.text} is served by both '${prefixes.get(p.text)}' and '${m.id}'`);
      prefixes.set(p.text, m.id);
    }
  const addrs = new Map<string, string>();
  const pairs = new Set<string>();
  for (const item of r.seq(top, 'links', 'links')?.items ?? []) {
    for (const p of isMap(item) ? item.items : []) {
      const k = isScalar(p.key) ? String(p.key.value) : '?';
      if (k !== 'key' && k !== 'key_id' && !o.members.has(k)) r.fail(p.key as Node, `'${k}' is not a member of the overlay`);
    }
    const f = r.map(
      item,
      [...o.members.keys(), 'key', 'key_id'],
      'a link',
      'two members with their addresses on it, e.g. { a: 10.31.1.1, n1: 10.31.1.2 }',
    );
    const ends = [...f.pairs.keys()].filter((k) => k !== 'key' && k !== 'key_id');
    if (ends.length !== 2) r.fail(f.node, `a link joins two members (it names ${ends.length}: ${ends.join(', ') || 'none'})`);
    const pair = [...ends].sort().join('\0');
    if (pairs.has(pair)) r.fail(f.node, `'${ends[0]}' and '${ends[1]}' are linked twice`);
    pairs.add(pair);
    const link: Link = {
      ends: ends.map((id) => {
        const a = r.str(f, id);
        const address = ipv4(r, a.v, a.node, `'${id}'`);
        const had = addrs.get(address);
        if (had && had !== id) r.fail(a.node, `address ${address} is given to both '${had}' and '${id}'`);
        addrs.set(address, id);
        return { id, address };
      }) as Link['ends'],
      keyId: r.int(f, 'key_id', 0, 255, 0),
    };
    if (f.pairs.has('key')) {
      const k = r.str(f, 'key');
      if (!/^[0-9a-fA-F]{32}$/.test(k.v))
        r.fail(k.node, "a link's 'key' must be 32 hex digits (16 bytes), e.g. from: openssl rand -hex 16");
      link.key = Buffer.from(k.v, 'hex');
    } else if (!o.secret)
      r.fail(f.node, `the link of '${ends[0]}' and '${ends[1]}' has no 'key', and the overlay no 'secret' to derive one from`);
    o.links.push(link);
  }
  for (const m of o.members.values()) {
    if (!o.links.some((l) => l.ends.some((e) => e.id === m.id))) r.fail(ms, `member '${m.id}' is on no link`);
    if (o.links.filter((l) => l.ends.some((e) => e.id === m.id)).length > MAX_NEIGHBOURS)
      r.fail(ms, `member '${m.id}' has more than ${MAX_NEIGHBOURS} links: the most one node has`);
  }
  for (const id of o.members.keys()) {
    try {
      memberView(o, id);
    } catch (e) {
      throw new ItmError(`${file}: ${id}'s view of it: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return o;
}

/**
 * A member's view of the overlay, as a topology file: its neighbours are the members it has a
 * link with, at their addresses on that link (their other addresses as `also`), each with its
 * pair's key; its destinations every member's prefixes, unless it serves none (a relay). `slots`
 * are the neighbours' slots in the view it has now: they keep them, and a new one takes the
 * lowest free slot (topology.ts, `slot:`).
 */
export function memberView(o: Overlay, id: string, slots: Map<string, number> = new Map()): { text: string; topology: Topology } {
  const me = o.members.get(id);
  if (!me) throw new ItmError(`${id} is not a member of overlay ${o.name}`);
  const mine = o.links.filter((l) => l.ends.some((e) => e.id === id));
  const addressesOf = (m: string) => o.links.flatMap((l) => l.ends.filter((e) => e.id === m).map((e) => e.address));
  const taken = new Set<number>();
  for (const l of mine) {
    const s = slots.get(l.ends.find((e) => e.id !== id)!.id);
    if (s !== undefined) taken.add(s);
  }
  let free = 0;
  const neighbours = mine.map((l) => {
    const me_ = l.ends.find((e) => e.id === id)!;
    const other = l.ends.find((e) => e !== me_)!;
    let slot = slots.get(other.id);
    if (slot === undefined) {
      while (taken.has(free)) free++;
      slot = free;
      taken.add(slot);
    }
    const key = l.key ?? pairKey(o.secret!, o.name, id, other.id);
    const also = addressesOf(other.id).filter((a) => a !== other.address);
    return {
      id: other.id,
      address: other.address,
      ...(also.length ? { also } : {}),
      key: key.toString('hex'),
      ...(l.keyId ? { key_id: l.keyId } : {}),
      slot,
    };
  });
  const destinations = me.serves.length
    ? [...o.members.values()].flatMap((m) => m.serves.map((p) => ({ prefix: p.text, node: m.id })))
    : [];
  const view = {
    node: id,
    address: me.address ?? mine[0]?.ends.find((e) => e.id === id)?.address,
    ...(o.port ? { port: o.port } : {}),
    neighbours,
    ...(destinations.length ? { destinations } : {}),
    ...(o.probe ? { probe: o.probe } : {}),
  };
  const text = `# ${id}'s view of overlay ${o.name} (${o.file}), written by itmd: do not edit\n${new Document(view).toString({ lineWidth: 0 })}`;
  return { text, topology: parseTopology(text, `${o.name}.yaml`) };
}
