// A module's interest: which packets it wants to see. Parsed from the command line
// (`proto=udp,dport=5001,dst=10.0.0.0/8`), encoded into a kernel slot plus prefix-trie entries,
// described back for people, and evaluated against a flow to explain a decision.
import { ItmError } from './errors.js';
import { parsePrefix, type Prefix } from './netaddr.js';
import * as abi from './abi.js';

export interface PortRange {
  lo: number;
  hi: number;
}
export interface Interest {
  protos: number[];
  src: Prefix[];
  dst: Prefix[];
  sport: PortRange[];
  dport: PortRange[];
  indev?: string;
  outdev?: string;
  origin: Array<'local' | 'forwarded'>;
  family: Array<4 | 6>;
}

export const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, gre: 47, esp: 50, ah: 51, icmpv6: 58, sctp: 132 };
export const protoName = (n: number) => Object.entries(PROTOCOLS).find(([, v]) => v === n)?.[0] ?? String(n);

/** A protocol by name or number; own names only (not `constructor` and the like). */
export function protoNumber(v: string): number | undefined {
  if (/^\d+$/.test(v)) return Number(v) <= 255 ? Number(v) : undefined;
  const k = v.toLowerCase();
  return Object.hasOwn(PROTOCOLS, k) ? PROTOCOLS[k] : undefined;
}

export const INTEREST_KEYS = ['proto', 'src', 'dst', 'sport', 'dport', 'indev', 'outdev', 'origin', 'family'] as const;

export function emptyInterest(): Interest {
  return { protos: [], src: [], dst: [], sport: [], dport: [], origin: [], family: [] };
}

function parsePorts(key: string, v: string): PortRange {
  const m = /^(\d+)(?:-(\d+))?$/.exec(v);
  const bad = (why: string) => new ItmError(`invalid interest ${key}=${v}: ${why}`);
  if (!m) throw bad('use a port (5001) or a range (1000-2000)');
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) throw bad('ports are 0-65535');
  if (hi < lo) throw bad('the range is empty (its end is below its start)');
  return { lo, hi };
}

/** Parses one or more `--interest` strings; keys may repeat (a set), across strings too. */
export function parseInterest(specs: string | string[] | undefined): Interest {
  const it = emptyInterest();
  const list = specs === undefined ? [] : Array.isArray(specs) ? specs : [specs];
  for (const spec of list) {
    for (const part of spec
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)) {
      const eq = part.indexOf('=');
      if (eq <= 0) throw new ItmError(`invalid interest '${part}': expected key=value (keys: ${INTEREST_KEYS.join(', ')})`);
      const key = part.slice(0, eq).trim().toLowerCase();
      const v = part.slice(eq + 1).trim();
      if (!v) throw new ItmError(`invalid interest '${part}': empty value`);
      switch (key) {
        case 'proto': {
          const n = protoNumber(v);
          if (n === undefined) throw new ItmError(`invalid interest proto=${v}: use ${Object.keys(PROTOCOLS).join(', ')} or 0-255`);
          if (!it.protos.includes(n)) it.protos.push(n);
          break;
        }
        case 'src':
        case 'dst': {
          const p = parsePrefix(v);
          if (typeof p === 'string') throw new ItmError(`invalid interest ${key}=${v}: ${p}`);
          it[key].push(p);
          break;
        }
        case 'sport':
        case 'dport':
          it[key].push(parsePorts(key, v));
          if (it[key].length > abi.ITM_MAX_PORT_RANGES) {
            throw new ItmError(`invalid interest: at most ${abi.ITM_MAX_PORT_RANGES} ${key} values or ranges`);
          }
          break;
        case 'indev':
        case 'outdev':
          if (it[key] !== undefined && it[key] !== v) throw new ItmError(`invalid interest: one ${key} only (got ${it[key]} and ${v})`);
          it[key] = v;
          break;
        case 'origin':
          if (v !== 'local' && v !== 'forwarded') throw new ItmError(`invalid interest origin=${v}: use local or forwarded`);
          if (!it.origin.includes(v)) it.origin.push(v);
          break;
        case 'family': {
          const f = v === '4' || v === 'ipv4' ? 4 : v === '6' || v === 'ipv6' ? 6 : undefined;
          if (!f) throw new ItmError(`invalid interest family=${v}: use 4 or 6`);
          if (!it.family.includes(f)) it.family.push(f);
          break;
        }
        default:
          throw new ItmError(`invalid interest key '${key}' (keys: ${INTEREST_KEYS.join(', ')})`);
      }
    }
  }
  const portless = it.protos.filter((p) => p !== 6 && p !== 17 && p !== 132);
  if ((it.sport.length || it.dport.length) && it.protos.length && portless.length === it.protos.length) {
    throw new ItmError(`invalid interest: ports given but proto=${it.protos.map(protoName).join('/')} has no ports`);
  }
  return it;
}

/** The interest in the command-line syntax, for display and to store. */
export function formatInterest(it: Interest): string {
  const parts: string[] = [];
  for (const f of it.family) parts.push(`family=${f}`);
  for (const p of it.protos) parts.push(`proto=${protoName(p)}`);
  for (const p of it.src) parts.push(`src=${p.text}`);
  for (const p of it.dst) parts.push(`dst=${p.text}`);
  for (const r of it.sport) parts.push(`sport=${r.lo === r.hi ? r.lo : `${r.lo}-${r.hi}`}`);
  for (const r of it.dport) parts.push(`dport=${r.lo === r.hi ? r.lo : `${r.lo}-${r.hi}`}`);
  if (it.indev) parts.push(`indev=${it.indev}`);
  if (it.outdev) parts.push(`outdev=${it.outdev}`);
  for (const o of it.origin) parts.push(`origin=${o}`);
  return parts.length ? parts.join(',') : 'all';
}

/** The kernel slot for an interest; devices must already be resolved to ifindexes. */
export function encodeSlot(id: number, it: Interest, dev: { indev?: number; outdev?: number }): abi.ItmSlot {
  let flags = 0;
  const protos = [0n, 0n, 0n, 0n];
  if (it.protos.length) {
    flags |= abi.ITM_I_PROTO;
    for (const p of it.protos) protos[p >> 6] = protos[p >> 6]! | (1n << BigInt(p & 63));
  }
  if (it.src.length) flags |= abi.ITM_I_SRC;
  if (it.dst.length) flags |= abi.ITM_I_DST;
  if (it.sport.length) flags |= abi.ITM_I_SPORT;
  if (it.dport.length) flags |= abi.ITM_I_DPORT;
  if (dev.indev !== undefined) flags |= abi.ITM_I_INDEV;
  if (dev.outdev !== undefined) flags |= abi.ITM_I_OUTDEV;
  if (it.origin.includes('local')) flags |= abi.ITM_I_LOCAL;
  if (it.origin.includes('forwarded')) flags |= abi.ITM_I_FORWARDED;
  if (it.family.includes(4)) flags |= abi.ITM_I_IPV4;
  if (it.family.includes(6)) flags |= abi.ITM_I_IPV6;
  const src4 = inlinePrefixes(it.src);
  const dst4 = inlinePrefixes(it.dst);
  return {
    id,
    flags,
    protos,
    indev: dev.indev ?? 0,
    outdev: dev.outdev ?? 0,
    n_sport: it.sport.length,
    n_dport: it.dport.length,
    user: 0,
    segments: 0,
    n_src4: src4.length,
    n_dst4: dst4.length,
    pad: Buffer.alloc(2),
    sport: it.sport,
    dport: it.dport,
    src4: padPrefixes(src4),
    dst4: padPrefixes(dst4),
  };
}

/** A prefix list as the slot keeps it (struct itm_prefix4, in the packet's byte order): none
 * when it is not all IPv4 or longer than the slot has room for, and the tries have it. */
function inlinePrefixes(list: Prefix[]): abi.ItmPrefix4[] {
  if (list.length > abi.ITM_INLINE_PREFIXES || list.some((x) => x.family !== 4)) return [];
  return list.map((x) => {
    const mask = Buffer.alloc(4);
    mask.writeUInt32BE(x.len === 0 ? 0 : (0xffffffff << (32 - x.len)) >>> 0);
    const addr = Buffer.from(x.addr.subarray(12, 16).map((b, i) => b & mask[i]!));
    return { addr: addr.readUInt32LE(0), mask: mask.readUInt32LE(0) };
  });
}
const padPrefixes = (l: abi.ItmPrefix4[]) => [
  ...l,
  ...Array.from({ length: abi.ITM_INLINE_PREFIXES - l.length }, () => ({ addr: 0, mask: 0 })),
];

/** The prefix-trie key of a module's prefix (see struct itm_lpm_key). */
export function lpmKey(id: number, addr: Buffer, len: number, family: 4 | 6): Buffer {
  return abi.encode(abi.itm_lpm_key, { prefixlen: 32 + 8 + (family === 4 ? 96 : 0) + len, id, family, addr });
}

export interface FlowQuery {
  family: 4 | 6;
  proto: number;
  src: Buffer; // 16 bytes, IPv4-mapped for IPv4
  dst: Buffer;
  sport: number;
  dport: number;
  indev?: number; // ifindex the packet came in on; 0 for locally sent
  local?: boolean; // origin, when known
}

/**
 * Why a slot would not see a flow: undefined if it would. `inTrie(which, id, addr)` asks the
 * kernel's prefix tries, so the answer comes from the same state the data path uses.
 */
export function mismatch(
  slot: abi.ItmSlot,
  flow: FlowQuery,
  ctx: {
    hookIfindex: number;
    egress: boolean;
    inTrie: (which: 'src' | 'dst', id: number, addr: Buffer) => boolean;
  },
): string | undefined {
  const f = slot.flags;
  if (f & (abi.ITM_I_IPV4 | abi.ITM_I_IPV6) && !(f & (flow.family === 4 ? abi.ITM_I_IPV4 : abi.ITM_I_IPV6)))
    return `family is IPv${flow.family}`;
  if (f & abi.ITM_I_PROTO && !((slot.protos[flow.proto >> 6]! >> BigInt(flow.proto & 63)) & 1n))
    return `proto ${protoName(flow.proto)} is not in its interest`;
  const hasPorts = flow.proto === 6 || flow.proto === 17 || flow.proto === 132;
  const inRanges = (rs: PortRange[], n: number, port: number) => rs.slice(0, n).some((r) => port >= r.lo && port <= r.hi);
  if (f & (abi.ITM_I_SPORT | abi.ITM_I_DPORT) && !hasPorts) return `proto ${protoName(flow.proto)} has no ports`;
  if (f & abi.ITM_I_SPORT && !inRanges(slot.sport, slot.n_sport, flow.sport)) return `sport ${flow.sport} is not in its interest`;
  if (f & abi.ITM_I_DPORT && !inRanges(slot.dport, slot.n_dport, flow.dport)) return `dport ${flow.dport} is not in its interest`;
  const indev = ctx.egress ? flow.indev : ctx.hookIfindex;
  if (f & abi.ITM_I_INDEV && indev !== undefined && slot.indev !== indev) return `it came in on another device`;
  if (f & abi.ITM_I_OUTDEV && slot.outdev !== ctx.hookIfindex) return `it goes out on another device`;
  if (f & abi.ITM_I_SRC && !ctx.inTrie('src', slot.id, flow.src)) return `src is not in its prefixes`;
  if (f & abi.ITM_I_DST && !ctx.inTrie('dst', slot.id, flow.dst)) return `dst is not in its prefixes`;
  if (f & (abi.ITM_I_LOCAL | abi.ITM_I_FORWARDED) && flow.local !== undefined) {
    if (!(f & (flow.local ? abi.ITM_I_LOCAL : abi.ITM_I_FORWARDED))) return `origin is ${flow.local ? 'local' : 'forwarded'}`;
  }
  return undefined;
}
