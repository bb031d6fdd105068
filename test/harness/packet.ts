// Packets by hand and packets from the wire: an Ethernet frame builder (VLAN, IPv4 with options,
// IPv6 with extension headers, fragments, TCP/UDP/ICMP/ICMPv6, ARP) that always writes correct
// checksums unless told otherwise, and a parser that checks them. Tests use the builder for
// BPF_PROG_TEST_RUN inputs and the parser for tcpdump captures, so both sides must agree with the
// kernel, not just with each other (harness.test.ts cross-checks both against tcpdump and real traffic).
import { foldSum, internetChecksum, onesSum } from '../../src/net/checksum.js';

export const ETH_P = { IPV4: 0x0800, ARP: 0x0806, IPV6: 0x86dd, VLAN: 0x8100, QINQ: 0x88a8 } as const;
export const IPPROTO = { HOPOPTS: 0, ICMP: 1, TCP: 6, UDP: 17, ROUTING: 43, FRAGMENT: 44, ICMPV6: 58, NONE: 59, DSTOPTS: 60 } as const;
export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;

const ETH_HLEN = 14;

// ---------------------------------------------------------------------------------------------
// Addresses

export type Family = 4 | 6;

export function ipFamily(addr: string): Family {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(addr)) return 4;
  if (addr.includes(':')) return 6;
  throw new Error(`not an IP address: ${addr}`);
}

function parseIpv4(addr: string): Buffer {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new Error(`not an IPv4 address: ${addr}`);
  return Buffer.from(
    parts.map((p) => {
      if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new Error(`not an IPv4 address: ${addr}`);
      return Number(p);
    }),
  );
}

function parseIpv6(addr: string): Buffer {
  const bad = () => new Error(`not an IPv6 address: ${addr}`);
  let s = addr.split('%')[0] ?? '';
  const out = Buffer.alloc(16);
  let tail: Buffer | undefined;
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    // embedded IPv4 (::ffff:1.2.3.4)
    tail = parseIpv4(s.slice(lastColon + 1));
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  if (halves.length > 2) throw bad();
  const groups = (h: string | undefined): number[] =>
    h
      ? h.split(':').map((g) => {
          if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
          return parseInt(g, 16);
        })
      : [];
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  if (halves.length === 1 ? head.length !== 8 : head.length + rest.length > 7) throw bad();
  const all = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  all.forEach((g, i) => {
    out.writeUInt16BE(g, i * 2);
  });
  if (tail) tail.copy(out, 12);
  return out;
}

/** 4 or 16 bytes, network order. */
export function ipToBuffer(addr: string): Buffer {
  return ipFamily(addr) === 4 ? parseIpv4(addr) : parseIpv6(addr);
}

/** Text form of an address; IPv6 as RFC 5952 (lower case, longest zero run compressed). */
export function formatIp(buf: Uint8Array, offset = 0, family: Family = buf.length - offset >= 16 ? 6 : 4): string {
  if (family === 4) return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(((buf[offset + 2 * i] ?? 0) << 8) | (buf[offset + 2 * i + 1] ?? 0));
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `::ffff:${formatIp(buf, offset + 12, 4)}`;
  }
  let bestStart = -1,
    bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/** The canonical text form of an address, for comparing addresses written differently. */
export function canonicalIp(addr: string): string {
  const b = ipToBuffer(addr);
  return formatIp(b, 0, b.length === 4 ? 4 : 6);
}

export function macToBuffer(mac: string): Buffer {
  const parts = mac.split(/[:-]/);
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{1,2}$/.test(p))) throw new Error(`not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(buf: Uint8Array, offset = 0): string {
  return Array.from(buf.subarray(offset, offset + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

// ---------------------------------------------------------------------------------------------
// Checksums

// the sums themselves are the product's (src/net/checksum.ts), re-exported for tests
export { foldSum, internetChecksum, onesSum };

function pseudoHeader(family: Family, src: Uint8Array, dst: Uint8Array, proto: number, length: number): Buffer {
  if (family === 4) {
    const b = Buffer.alloc(12);
    b.set(src.subarray(0, 4), 0);
    b.set(dst.subarray(0, 4), 4);
    b[9] = proto;
    b.writeUInt16BE(length & 0xffff, 10);
    return b;
  }
  const b = Buffer.alloc(40);
  b.set(src.subarray(0, 16), 0);
  b.set(dst.subarray(0, 16), 16);
  b.writeUInt32BE(length, 32);
  b[39] = proto;
  return b;
}

const checksumOffset = (proto: number): number | undefined =>
  proto === IPPROTO.TCP ? 16 : proto === IPPROTO.UDP ? 6 : proto === IPPROTO.ICMP || proto === IPPROTO.ICMPV6 ? 2 : undefined;

/**
 * The checksum a TCP/UDP/ICMP/ICMPv6 segment should carry (its own checksum field is ignored).
 * `dst` is the final destination (after a routing header). A UDP result of 0 is sent as 0xffff.
 */
export function l4Checksum(family: Family, src: Uint8Array | string, dst: Uint8Array | string, proto: number, segment: Uint8Array): number {
  const off = checksumOffset(proto);
  if (off === undefined) throw new Error(`no checksum known for protocol ${proto}`);
  const seg = Buffer.from(segment);
  seg.writeUInt16BE(0, off);
  const s = typeof src === 'string' ? ipToBuffer(src) : src;
  const d = typeof dst === 'string' ? ipToBuffer(dst) : dst;
  const sum = proto === IPPROTO.ICMP ? internetChecksum(seg) : internetChecksum(pseudoHeader(family, s, d, proto, seg.length), seg);
  return proto === IPPROTO.UDP && sum === 0 ? 0xffff : sum;
}

/** True when the segment's checksum field is right (UDP over IPv4 with checksum 0 means "none": true). */
export function verifyL4Checksum(
  family: Family,
  src: Uint8Array | string,
  dst: Uint8Array | string,
  proto: number,
  segment: Uint8Array,
): boolean {
  const off = checksumOffset(proto);
  if (off === undefined || segment.length < off + 2) return false;
  if (proto === IPPROTO.UDP && family === 4 && segment[off] === 0 && segment[off + 1] === 0) return true;
  const s = typeof src === 'string' ? ipToBuffer(src) : src;
  const d = typeof dst === 'string' ? ipToBuffer(dst) : dst;
  const acc = proto === IPPROTO.ICMP ? onesSum(segment) : onesSum(segment, onesSum(pseudoHeader(family, s, d, proto, segment.length)));
  return foldSum(acc) === 0xffff;
}

/**
 * Whether a TCP/UDP segment's checksum field holds just the pseudo-header sum: a checksum left
 * for offload (CHECKSUM_PARTIAL), which a veth carries across as it is and a capture then sees.
 */
export function isPartialL4Checksum(
  family: Family,
  src: Uint8Array | string,
  dst: Uint8Array | string,
  proto: number,
  segment: Uint8Array,
): boolean {
  const off = checksumOffset(proto);
  if ((proto !== IPPROTO.TCP && proto !== IPPROTO.UDP) || off === undefined || segment.length < off + 2) return false;
  const s = typeof src === 'string' ? ipToBuffer(src) : src;
  const d = typeof dst === 'string' ? ipToBuffer(dst) : dst;
  const field = (segment[off]! << 8) | segment[off + 1]!;
  return field === foldSum(onesSum(pseudoHeader(family, s, d, proto, segment.length)));
}

/** The checksum an IPv4 header should carry (its own checksum field is ignored). */
export function ipv4HeaderChecksum(header: Uint8Array): number {
  const h = Buffer.from(header);
  h.writeUInt16BE(0, 10);
  return internetChecksum(h);
}

export function verifyIpv4HeaderChecksum(header: Uint8Array): boolean {
  return foldSum(onesSum(header)) === 0xffff;
}

// ---------------------------------------------------------------------------------------------
// Builder

export interface VlanSpec {
  id: number;
  pcp?: number;
  dei?: boolean;
  tpid?: number;
}

export type Ipv6ExtSpec =
  | { type: 'hop' | 'dst'; options?: Buffer } // TLV options; padded to 8 bytes with Pad1/PadN
  | { type: 'routing'; routingType?: number; segmentsLeft?: number; addresses?: string[]; data?: Buffer }
  | { type: 'frag'; offset?: number; more?: boolean; id?: number };

export interface FragmentSpec {
  /** Byte offset of this fragment's data in the original datagram's payload (multiple of 8). */
  offset: number;
  more: boolean;
  id?: number;
}

export interface TcpSpec {
  seq?: number;
  ack?: number;
  /** A number, or letters: F S R P A U E C (e.g. 'SA', 'PA'). Default ACK. */
  flags?: number | string;
  window?: number;
  urgent?: number;
  /** Raw TCP options; padded with zeros (EOL) to a multiple of 4 bytes. */
  options?: Buffer;
}

export interface IcmpSpec {
  type?: number;
  code?: number;
  id?: number;
  seq?: number /** the 4 bytes after the checksum, instead of id/seq */;
  rest?: Buffer;
}

export interface PacketSpec {
  srcMac?: string;
  dstMac?: string;
  /** One VLAN tag (a number is the VLAN id), or several outer-first. */
  vlan?: number | VlanSpec | VlanSpec[];
  family: Family;
  src: string;
  dst: string;
  /** 'icmp' is ICMP for IPv4 and ICMPv6 for IPv6. Another number gives a header-less payload. */
  proto: 'udp' | 'tcp' | 'icmp' | number;
  sport?: number;
  dport?: number;
  /** The whole TOS / traffic class byte; otherwise dscp << 2 | ecn. */
  tos?: number;
  tclass?: number;
  dscp?: number;
  ecn?: number;
  ttl?: number;
  hopLimit?: number;
  /** IPv4 identification (default 0) and DF flag (default false). */
  id?: number;
  df?: boolean;
  flowLabel?: number;
  /** Raw IPv4 options, padded with EOL to a multiple of 4 bytes (at most 40). */
  ipOptions?: Buffer;
  ipv6ExtHeaders?: Ipv6ExtSpec[];
  /** Make this packet a fragment. With offset > 0 the payload is raw data, no L4 header is built.
   *  For IPv6 a fragment header is appended after `ipv6ExtHeaders`. */
  fragment?: FragmentSpec;
  tcp?: TcpSpec;
  icmp?: IcmpSpec;
  payload?: Buffer | string;
  /** Force a checksum value (to build a wrong one). */
  ipChecksum?: number;
  l4Checksum?: number;
}

const DEFAULT_SRC_MAC = '02:00:00:00:00:01';
const DEFAULT_DST_MAC = '02:00:00:00:00:02';

export function tcpFlagsFrom(flags: number | string): number {
  if (typeof flags === 'number') return flags;
  const bits: Record<string, number> = { F: 0x01, S: 0x02, R: 0x04, P: 0x08, A: 0x10, U: 0x20, E: 0x40, C: 0x80, N: 0x100 };
  let v = 0;
  for (const ch of flags.toUpperCase()) {
    const b = bits[ch];
    if (b === undefined) throw new Error(`unknown TCP flag letter ${ch} in ${flags}`);
    v |= b;
  }
  return v;
}

export function tcpFlagString(flags: number): string {
  return 'FSRPAUECN'
    .split('')
    .filter((_, i) => flags & (1 << i))
    .join('');
}

function protoNumber(proto: PacketSpec['proto'], family: Family): number {
  if (proto === 'udp') return IPPROTO.UDP;
  if (proto === 'tcp') return IPPROTO.TCP;
  if (proto === 'icmp') return family === 4 ? IPPROTO.ICMP : IPPROTO.ICMPV6;
  return proto;
}

function vlanTags(v: PacketSpec['vlan']): VlanSpec[] {
  if (v === undefined) return [];
  if (typeof v === 'number') return [{ id: v }];
  return Array.isArray(v) ? v : [v];
}

function ethernet(
  srcMac: string | undefined,
  dstMac: string | undefined,
  vlan: PacketSpec['vlan'],
  ethertype: number,
  body: Buffer,
): Buffer {
  const tags = vlanTags(vlan);
  const h = Buffer.alloc(ETH_HLEN + 4 * tags.length);
  macToBuffer(dstMac ?? DEFAULT_DST_MAC).copy(h, 0);
  macToBuffer(srcMac ?? DEFAULT_SRC_MAC).copy(h, 6);
  let o = 12;
  tags.forEach((t, i) => {
    if (t.id < 0 || t.id > 4095) throw new Error(`VLAN id out of range: ${t.id}`);
    h.writeUInt16BE(t.tpid ?? (i === 0 && tags.length > 1 ? ETH_P.QINQ : ETH_P.VLAN), o);
    h.writeUInt16BE((((t.pcp ?? 0) & 7) << 13) | (t.dei ? 1 << 12 : 0) | t.id, o + 2);
    o += 4;
  });
  h.writeUInt16BE(ethertype, o);
  return Buffer.concat([h, body]);
}

function payloadBytes(p: PacketSpec['payload']): Buffer {
  return p === undefined ? Buffer.alloc(0) : typeof p === 'string' ? Buffer.from(p) : p;
}

function tos(spec: PacketSpec): number {
  const v = spec.tos ?? spec.tclass ?? (((spec.dscp ?? 0) & 0x3f) << 2) | ((spec.ecn ?? 0) & 3);
  if (v < 0 || v > 255) throw new Error(`TOS out of range: ${v}`);
  return v;
}

/** The L4 header + payload, checksum field 0. */
function l4Segment(spec: PacketSpec, proto: number): Buffer {
  const payload = payloadBytes(spec.payload);
  if (proto === IPPROTO.UDP) {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(spec.sport ?? 0, 0);
    h.writeUInt16BE(spec.dport ?? 0, 2);
    if (8 + payload.length > 0xffff) throw new Error('UDP datagram longer than 65535 bytes');
    h.writeUInt16BE(8 + payload.length, 4);
    return Buffer.concat([h, payload]);
  }
  if (proto === IPPROTO.TCP) {
    const t = spec.tcp ?? {};
    let opts = t.options ?? Buffer.alloc(0);
    if (opts.length % 4) opts = Buffer.concat([opts, Buffer.alloc(4 - (opts.length % 4))]);
    if (opts.length > 40) throw new Error('TCP options longer than 40 bytes');
    const h = Buffer.alloc(20 + opts.length);
    h.writeUInt16BE(spec.sport ?? 0, 0);
    h.writeUInt16BE(spec.dport ?? 0, 2);
    h.writeUInt32BE((t.seq ?? 0) >>> 0, 4);
    h.writeUInt32BE((t.ack ?? 0) >>> 0, 8);
    const flags = tcpFlagsFrom(t.flags ?? TCP_FLAGS.ACK);
    h[12] = ((h.length / 4) << 4) | ((flags >> 8) & 1);
    h[13] = flags & 0xff;
    h.writeUInt16BE(t.window ?? 64240, 14);
    h.writeUInt16BE(t.urgent ?? 0, 18);
    opts.copy(h, 20);
    return Buffer.concat([h, payload]);
  }
  if (proto === IPPROTO.ICMP || proto === IPPROTO.ICMPV6) {
    const i = spec.icmp ?? {};
    const h = Buffer.alloc(8);
    h[0] = i.type ?? (proto === IPPROTO.ICMP ? 8 : 128); // echo request
    h[1] = i.code ?? 0;
    if (i.rest) {
      if (i.rest.length !== 4) throw new Error('icmp.rest must be 4 bytes');
      i.rest.copy(h, 4);
    } else {
      h.writeUInt16BE(i.id ?? 0, 4);
      h.writeUInt16BE(i.seq ?? 0, 6);
    }
    return Buffer.concat([h, payload]);
  }
  return payload;
}

const EXT_CODE = { hop: IPPROTO.HOPOPTS, routing: IPPROTO.ROUTING, frag: IPPROTO.FRAGMENT, dst: IPPROTO.DSTOPTS } as const;

/** The destination an IPv6 upper-layer checksum uses: the last hop of a routing header still to be visited. */
function finalDestination(dst: string, exts: readonly Ipv6ExtSpec[]): string {
  for (const e of exts) {
    if (e.type === 'routing' && (e.segmentsLeft ?? 0) > 0 && e.addresses?.length) {
      // Segment routing lists the final segment first; type 0 and 2 list it last.
      return (e.routingType === 4 ? e.addresses[0] : e.addresses[e.addresses.length - 1])!;
    }
  }
  return dst;
}

function ipv6Ext(e: Ipv6ExtSpec, next: number): Buffer {
  if (e.type === 'frag') {
    const b = Buffer.alloc(8);
    const off = e.offset ?? 0;
    if (off % 8) throw new Error(`fragment offset ${off} is not a multiple of 8`);
    b[0] = next;
    b.writeUInt16BE(((off / 8) << 3) | (e.more ? 1 : 0), 2);
    b.writeUInt32BE((e.id ?? 0) >>> 0, 4);
    return b;
  }
  let body: Buffer;
  if (e.type === 'routing') {
    const addrs = (e.addresses ?? []).map(ipToBuffer);
    const head = Buffer.alloc(2);
    head[0] = e.routingType ?? 0;
    head[1] = e.segmentsLeft ?? 0;
    let data = e.data;
    if (!data) {
      const reserved = Buffer.alloc(4);
      if (e.routingType === 4) {
        reserved[0] = Math.max(0, addrs.length - 1);
      } // SRH: last entry, flags, tag
      data = Buffer.concat([reserved, ...addrs]);
    }
    body = Buffer.concat([head, data]);
    if ((body.length + 2) % 8) body = Buffer.concat([body, Buffer.alloc(8 - ((body.length + 2) % 8))]);
  } else {
    body = e.options ?? Buffer.alloc(0);
    const pad = (8 - ((body.length + 2) % 8)) % 8;
    if (pad === 1) body = Buffer.concat([body, Buffer.from([0])]);
    else if (pad > 1) body = Buffer.concat([body, Buffer.from([1, pad - 2]), Buffer.alloc(pad - 2)]);
  }
  const total = body.length + 2;
  if (total / 8 - 1 > 255) throw new Error('IPv6 extension header too long');
  return Buffer.concat([Buffer.from([next, total / 8 - 1]), body]);
}

/** The IP packet (no Ethernet): the header(s) around an already-made upper-layer part. */
function ipPacket(spec: PacketSpec, proto: number, upper: Buffer): Buffer {
  const src = ipToBuffer(spec.src),
    dst = ipToBuffer(spec.dst);
  const fam = spec.family;
  if (src.length !== (fam === 4 ? 4 : 16) || dst.length !== src.length)
    throw new Error(`addresses ${spec.src} → ${spec.dst} are not IPv${fam}`);
  if (fam === 4) {
    let opts = spec.ipOptions ?? Buffer.alloc(0);
    if (opts.length % 4) opts = Buffer.concat([opts, Buffer.alloc(4 - (opts.length % 4))]);
    if (opts.length > 40) throw new Error('IPv4 options longer than 40 bytes');
    const h = Buffer.alloc(20 + opts.length);
    h[0] = 0x40 | (h.length / 4);
    h[1] = tos(spec);
    if (h.length + upper.length > 0xffff) throw new Error('IPv4 packet longer than 65535 bytes');
    h.writeUInt16BE(h.length + upper.length, 2);
    const f = spec.fragment;
    h.writeUInt16BE((f?.id ?? spec.id ?? 0) & 0xffff, 4);
    if (f && f.offset % 8) throw new Error(`fragment offset ${f.offset} is not a multiple of 8`);
    h.writeUInt16BE((spec.df ? 0x4000 : 0) | (f?.more ? 0x2000 : 0) | ((f?.offset ?? 0) / 8), 6);
    h[8] = spec.ttl ?? spec.hopLimit ?? 64;
    h[9] = proto;
    src.copy(h, 12);
    dst.copy(h, 16);
    opts.copy(h, 20);
    h.writeUInt16BE(spec.ipChecksum ?? ipv4HeaderChecksum(h), 10);
    return Buffer.concat([h, upper]);
  }
  const exts: Ipv6ExtSpec[] = [...(spec.ipv6ExtHeaders ?? [])];
  if (spec.fragment)
    exts.push({ type: 'frag', offset: spec.fragment.offset, more: spec.fragment.more, id: spec.fragment.id ?? spec.id ?? 0 });
  const extBufs = exts.map((e, i) => ipv6Ext(e, i + 1 < exts.length ? EXT_CODE[exts[i + 1]!.type] : proto));
  const h = Buffer.alloc(40);
  const tc = tos(spec);
  h.writeUInt32BE(((6 << 28) | (tc << 20) | ((spec.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  const plen = extBufs.reduce((n, b) => n + b.length, 0) + upper.length;
  if (plen > 0xffff) throw new Error('IPv6 payload longer than 65535 bytes');
  h.writeUInt16BE(plen, 4);
  h[6] = exts.length ? EXT_CODE[exts[0]!.type] : proto;
  h[7] = spec.hopLimit ?? spec.ttl ?? 64;
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([h, ...extBufs, upper]);
}

function extFragment(spec: PacketSpec): FragmentSpec | undefined {
  if (spec.fragment) return spec.fragment;
  const f = spec.ipv6ExtHeaders?.find((e) => e.type === 'frag');
  return f && f.type === 'frag' ? { offset: f.offset ?? 0, more: f.more ?? false } : undefined;
}

/** The IP packet alone (no Ethernet header). */
export function buildIp(spec: PacketSpec): Buffer {
  const proto = protoNumber(spec.proto, spec.family);
  const frag = spec.family === 4 ? spec.fragment : extFragment(spec);
  if (frag && frag.offset > 0) return ipPacket(spec, proto, payloadBytes(spec.payload));
  const seg = l4Segment(spec, proto);
  const off = checksumOffset(proto);
  if (off !== undefined) {
    const dst = spec.family === 6 ? finalDestination(spec.dst, spec.ipv6ExtHeaders ?? []) : spec.dst;
    seg.writeUInt16BE(spec.l4Checksum ?? l4Checksum(spec.family, spec.src, dst, proto, seg), off);
  }
  return ipPacket(spec, proto, seg);
}

/** An Ethernet frame (no FCS, no padding to 60 bytes). */
export function buildPacket(spec: PacketSpec): Buffer {
  return ethernet(spec.srcMac, spec.dstMac, spec.vlan, spec.family === 4 ? ETH_P.IPV4 : ETH_P.IPV6, buildIp(spec));
}

/**
 * The datagram `spec` describes, cut into fragments carrying at most `maxData` bytes of upper-layer
 * data each (rounded down to a multiple of 8). The L4 checksum covers the whole datagram, as a real
 * sender's would. For IPv6 every extension header of the spec is repeated in each fragment, before
 * the fragment header.
 */
export function buildFragments(spec: PacketSpec, maxData: number, id = spec.id ?? 0x1234): Buffer[] {
  const step = Math.floor(maxData / 8) * 8;
  if (step < 8) throw new Error('maxData must be at least 8');
  const { fragment: _f, ...whole } = spec;
  const ip = buildIp({ ...whole, ipv6ExtHeaders: spec.ipv6ExtHeaders?.filter((e) => e.type !== 'frag') });
  const hdrLen = spec.family === 4 ? (ip[0]! & 0x0f) * 4 : ip.length - upperLength(ip);
  const upper = ip.subarray(hdrLen);
  const frames: Buffer[] = [];
  for (let off = 0; off < upper.length; off += step) {
    const chunk = upper.subarray(off, Math.min(off + step, upper.length));
    const fspec: PacketSpec = {
      ...whole,
      ipv6ExtHeaders: spec.ipv6ExtHeaders?.filter((e) => e.type !== 'frag'),
      fragment: { offset: off, more: off + step < upper.length, id },
    };
    const proto = protoNumber(spec.proto, spec.family);
    frames.push(
      ethernet(
        spec.srcMac,
        spec.dstMac,
        spec.vlan,
        spec.family === 4 ? ETH_P.IPV4 : ETH_P.IPV6,
        ipPacket(fspec, proto, Buffer.from(chunk)),
      ),
    );
  }
  return frames;
}

/** Length of the upper-layer part of an IPv6 packet (after the extension headers). */
function upperLength(ip6: Buffer): number {
  let next = ip6[6]!;
  let o = 40;
  while (next === IPPROTO.HOPOPTS || next === IPPROTO.ROUTING || next === IPPROTO.DSTOPTS || next === IPPROTO.FRAGMENT) {
    const len = next === IPPROTO.FRAGMENT ? 8 : (ip6[o + 1]! + 1) * 8;
    next = ip6[o]!;
    o += len;
  }
  return ip6.length - o;
}

export interface ArpSpec {
  op?: 'request' | 'reply' | number;
  senderMac: string;
  senderIp: string;
  targetMac?: string;
  targetIp: string;
  /** Ethernet addresses: default sender → broadcast (request) or sender → target (reply). */
  srcMac?: string;
  dstMac?: string;
  vlan?: PacketSpec['vlan'];
}

export function buildArp(spec: ArpSpec): Buffer {
  const op = spec.op === 'reply' ? 2 : spec.op === 'request' || spec.op === undefined ? 1 : spec.op;
  const targetMac = spec.targetMac ?? '00:00:00:00:00:00';
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0);
  b.writeUInt16BE(ETH_P.IPV4, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(op, 6);
  macToBuffer(spec.senderMac).copy(b, 8);
  parseIpv4(spec.senderIp).copy(b, 14);
  macToBuffer(targetMac).copy(b, 18);
  parseIpv4(spec.targetIp).copy(b, 24);
  const dstMac = spec.dstMac ?? (op === 1 ? 'ff:ff:ff:ff:ff:ff' : targetMac);
  return ethernet(spec.srcMac ?? spec.senderMac, dstMac, spec.vlan, ETH_P.ARP, b);
}

// ---------------------------------------------------------------------------------------------
// Parser

export interface VlanTag {
  tpid: number;
  id: number;
  pcp: number;
  dei: boolean;
}
export interface ArpInfo {
  op: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}
export interface Ipv6ExtHeader {
  type: 'hop' | 'dst' | 'routing' | 'frag' | 'ah' | 'other';
  code: number;
  length: number;
  routingType?: number;
  segmentsLeft?: number;
  addresses?: string[];
  options?: Buffer;
}

export interface ParsedPacket {
  /** The bytes as given (captured: possibly cut at the snap length). */
  raw: Buffer;
  /** Length on the wire (pcap's original length; the buffer length when parsing a built packet). */
  origLen: number;
  /** Fewer bytes than the IP packet's length are present. */
  truncated: boolean;
  /** Something did not parse; the fields before the problem are set. */
  malformed?: string;
  /** Capture timestamp in µs since the epoch (pcap only). */
  tsUs?: number;
  srcMac?: string;
  dstMac?: string;
  vlan?: VlanTag;
  vlans: VlanTag[];
  /** The ethertype after VLAN tags (or the L3 protocol of a cooked/raw capture). */
  ethertype: number;
  arp?: ArpInfo;
  family?: Family;
  src?: string;
  dst?: string;
  /** The final destination when an IPv6 routing header has segments left (used by the checksum). */
  finalDst?: string;
  tos?: number;
  dscp?: number;
  ecn?: number;
  ttl?: number;
  ipId?: number;
  df?: boolean;
  flowLabel?: number;
  ipHeaderLen?: number;
  ipOptions?: Buffer;
  ipChecksum?: number;
  /** IPv4 header checksum verifies (IPv4 only). */
  ipChecksumOk?: boolean;
  extHeaders?: Ipv6ExtHeader[];
  /** Present when the packet is a fragment (offset in bytes). */
  fragment?: { offset: number; more: boolean; id: number };
  /** Upper-layer protocol number (after IPv6 extension headers). */
  proto?: number;
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  tcp?: { seq: number; ack: number; flags: number; window: number; urgent: number; headerLen: number; options: Buffer; checksum: number };
  udp?: { length: number; checksum: number };
  icmp?: { type: number; code: number; checksum: number; rest: Buffer };
  /** TCP/UDP/ICMP/ICMPv6 checksum verifies (UDP over IPv4 without checksum, 0, counts as good);
   *  undefined when the segment is not all there
   *  (cut by the snap length, or a fragment of a bigger datagram). */
  l4ChecksumOk?: boolean;
  /** The TCP/UDP checksum holds only the pseudo-header sum: left for offload by the sender
   *  (with offloads on, a veth carries such packets as they are). Set when l4ChecksumOk is false. */
  l4ChecksumPartial?: boolean;
  l3Offset?: number;
  l4Offset?: number;
  payloadOffset?: number;
  /** Upper-layer payload length per the headers (not limited by the capture). */
  payloadLen?: number;
  /** The payload bytes present in `raw`. */
  payload?: Buffer;
}

export type LinkType = 'ethernet' | 'raw' | 'sll' | 'sll2';

export interface ParseOptions {
  origLen?: number;
  linkType?: LinkType;
  tsUs?: number;
}

/** Parse a frame. Never throws: problems are reported in `malformed`. */
export function parsePacket(frame: Uint8Array, opts: ParseOptions = {}): ParsedPacket {
  const raw = Buffer.isBuffer(frame) ? frame : Buffer.from(frame.buffer, frame.byteOffset, frame.length);
  const p: ParsedPacket = { raw, origLen: opts.origLen ?? raw.length, truncated: false, vlans: [], ethertype: 0 };
  if (opts.tsUs !== undefined) p.tsUs = opts.tsUs;
  const fail = (why: string) => {
    p.malformed ??= why;
    return p;
  };
  let o = 0;
  const lt = opts.linkType ?? 'ethernet';
  if (lt === 'ethernet') {
    if (raw.length < ETH_HLEN) return fail('shorter than an Ethernet header');
    p.dstMac = formatMac(raw, 0);
    p.srcMac = formatMac(raw, 6);
    let et = raw.readUInt16BE(12);
    o = 14;
    while ((et === ETH_P.VLAN || et === ETH_P.QINQ) && p.vlans.length < 2) {
      if (raw.length < o + 4) return fail('VLAN tag cut short');
      const tci = raw.readUInt16BE(o);
      p.vlans.push({ tpid: et, id: tci & 0xfff, pcp: tci >> 13, dei: !!(tci & 0x1000) });
      et = raw.readUInt16BE(o + 2);
      o += 4;
    }
    if (p.vlans[0]) p.vlan = p.vlans[0];
    p.ethertype = et;
  } else if (lt === 'sll') {
    if (raw.length < 16) return fail('shorter than a cooked header');
    p.ethertype = raw.readUInt16BE(14);
    o = 16;
  } else if (lt === 'sll2') {
    if (raw.length < 20) return fail('shorter than a cooked v2 header');
    p.ethertype = raw.readUInt16BE(0);
    o = 20;
  } else {
    p.ethertype = (raw[0] ?? 0) >> 4 === 6 ? ETH_P.IPV6 : ETH_P.IPV4;
  }
  if (p.ethertype === ETH_P.ARP) return parseArp(p, o);
  if (p.ethertype === ETH_P.IPV4) return parseIpv4Packet(p, o);
  if (p.ethertype === ETH_P.IPV6) return parseIpv6Packet(p, o);
  return p;
}

function parseArp(p: ParsedPacket, o: number): ParsedPacket {
  const r = p.raw;
  if (r.length < o + 28) {
    p.truncated = true;
    return p;
  }
  if (r.readUInt16BE(o + 2) !== ETH_P.IPV4 || r[o + 4] !== 6 || r[o + 5] !== 4) {
    p.malformed = 'ARP for something other than Ethernet/IPv4';
    return p;
  }
  p.arp = {
    op: r.readUInt16BE(o + 6),
    senderMac: formatMac(r, o + 8),
    senderIp: formatIp(r, o + 14, 4),
    targetMac: formatMac(r, o + 18),
    targetIp: formatIp(r, o + 24, 4),
  };
  return p;
}

function parseIpv4Packet(p: ParsedPacket, o: number): ParsedPacket {
  const r = p.raw;
  p.family = 4;
  p.l3Offset = o;
  if (r.length < o + 20) {
    p.truncated = true;
    p.malformed = 'IPv4 header cut short';
    return p;
  }
  if (r[o]! >> 4 !== 4) {
    p.malformed = 'IP version is not 4';
    return p;
  }
  const ihl = (r[o]! & 0x0f) * 4;
  if (ihl < 20) {
    p.malformed = 'IPv4 header length < 20';
    return p;
  }
  const totalLen = r.readUInt16BE(o + 2);
  p.tos = r[o + 1]!;
  p.dscp = p.tos >> 2;
  p.ecn = p.tos & 3;
  p.ipId = r.readUInt16BE(o + 4);
  const fo = r.readUInt16BE(o + 6);
  p.df = !!(fo & 0x4000);
  p.ttl = r[o + 8]!;
  p.proto = r[o + 9]!;
  p.ipChecksum = r.readUInt16BE(o + 10);
  p.src = formatIp(r, o + 12, 4);
  p.dst = formatIp(r, o + 16, 4);
  p.ipHeaderLen = ihl;
  if (r.length < o + ihl) {
    p.truncated = true;
    return p;
  }
  if (ihl > 20) p.ipOptions = r.subarray(o + 20, o + ihl);
  p.ipChecksumOk = verifyIpv4HeaderChecksum(r.subarray(o, o + ihl));
  if (totalLen < ihl) {
    p.malformed = 'IPv4 total length < header length';
    return p;
  }
  const end = o + totalLen; // Ethernet padding after `end` is not part of the packet
  p.truncated = r.length < end;
  const fragOffset = (fo & 0x1fff) * 8,
    more = !!(fo & 0x2000);
  if (fragOffset || more) p.fragment = { offset: fragOffset, more, id: p.ipId };
  return parseUpper(p, o + ihl, end, fragOffset === 0, !fragOffset && !more, ipToBuffer(p.src), ipToBuffer(p.dst));
}

function parseIpv6Packet(p: ParsedPacket, o: number): ParsedPacket {
  const r = p.raw;
  p.family = 6;
  p.l3Offset = o;
  if (r.length < o + 40) {
    p.truncated = true;
    p.malformed = 'IPv6 header cut short';
    return p;
  }
  const w = r.readUInt32BE(o);
  if (w >>> 28 !== 6) {
    p.malformed = 'IP version is not 6';
    return p;
  }
  p.tos = (w >>> 20) & 0xff;
  p.dscp = p.tos >> 2;
  p.ecn = p.tos & 3;
  p.flowLabel = w & 0xfffff;
  const end = o + 40 + r.readUInt16BE(o + 4);
  p.ttl = r[o + 7]!;
  p.src = formatIp(r, o + 8, 6);
  p.dst = formatIp(r, o + 24, 6);
  const srcB = Buffer.from(r.subarray(o + 8, o + 24));
  let dstB: Buffer = Buffer.from(r.subarray(o + 24, o + 40));
  p.truncated = r.length < end;
  p.extHeaders = [];
  let next = r[o + 6]!;
  let q = o + 40;
  let l4First = true,
    whole = true;
  for (let n = 0; n < 16; n++) {
    const known =
      next === IPPROTO.HOPOPTS ||
      next === IPPROTO.ROUTING ||
      next === IPPROTO.FRAGMENT ||
      next === IPPROTO.DSTOPTS ||
      next === 51 ||
      next === 135;
    if (!known) break;
    if (r.length < q + 8) {
      p.truncated = true;
      p.proto = next;
      return p;
    }
    const nh = r[q]!;
    const len = next === IPPROTO.FRAGMENT ? 8 : next === 51 ? (r[q + 1]! + 2) * 4 : (r[q + 1]! + 1) * 8;
    const type =
      next === IPPROTO.HOPOPTS
        ? 'hop'
        : next === IPPROTO.ROUTING
          ? 'routing'
          : next === IPPROTO.FRAGMENT
            ? 'frag'
            : next === IPPROTO.DSTOPTS
              ? 'dst'
              : next === 51
                ? 'ah'
                : 'other';
    const h: Ipv6ExtHeader = { type, code: next, length: len };
    if (r.length < q + len) {
      p.extHeaders.push(h);
      p.truncated = true;
      p.proto = nh;
      return p;
    }
    if (type === 'hop' || type === 'dst') h.options = r.subarray(q + 2, q + len);
    if (type === 'routing') {
      h.routingType = r[q + 2]!;
      h.segmentsLeft = r[q + 3]!;
      if (h.routingType === 0 || h.routingType === 2 || h.routingType === 4) {
        h.addresses = [];
        for (let a = q + 8; a + 16 <= q + len; a += 16) h.addresses.push(formatIp(r, a, 6));
        if (h.segmentsLeft > 0 && h.addresses.length) {
          p.finalDst = (h.routingType === 4 ? h.addresses[0] : h.addresses[h.addresses.length - 1])!;
          dstB = ipToBuffer(p.finalDst);
        }
      }
    }
    if (type === 'frag') {
      const fo = r.readUInt16BE(q + 2);
      p.fragment = { offset: (fo >> 3) * 8, more: !!(fo & 1), id: r.readUInt32BE(q + 4) };
      l4First = p.fragment.offset === 0;
      whole = l4First && !p.fragment.more;
    }
    p.extHeaders.push(h);
    next = nh;
    q += len;
  }
  p.proto = next;
  return parseUpper(p, q, end, l4First, whole, srcB, dstB);
}

/** L4 at `o` up to `end` (the IP packet's end); `hasHeader`: first fragment or whole; `whole`: not a fragment. */
function parseUpper(p: ParsedPacket, o: number, end: number, hasHeader: boolean, whole: boolean, src: Buffer, dst: Buffer): ParsedPacket {
  const r = p.raw;
  const proto = p.proto!;
  const fam = p.family!;
  if (end < o) {
    p.malformed ??= 'IP length shorter than its headers';
    return p;
  }
  p.l4Offset = o;
  const complete = r.length >= end;
  const segment = r.subarray(o, Math.min(end, r.length));
  const segLen = end - o;
  let hlen = 0;
  if (!hasHeader) {
    hlen = 0;
  } else if (proto === IPPROTO.UDP) {
    if (segment.length < 8) return cut(p, segLen < 8);
    p.sport = segment.readUInt16BE(0);
    p.dport = segment.readUInt16BE(2);
    p.udp = { length: segment.readUInt16BE(4), checksum: segment.readUInt16BE(6) };
    hlen = 8;
  } else if (proto === IPPROTO.TCP) {
    if (segment.length < 20) return cut(p, segLen < 20);
    hlen = (segment[12]! >> 4) * 4;
    const flags = ((segment[12]! & 1) << 8) | segment[13]!;
    p.sport = segment.readUInt16BE(0);
    p.dport = segment.readUInt16BE(2);
    p.tcpFlags = flags;
    p.tcp = {
      seq: segment.readUInt32BE(4),
      ack: segment.readUInt32BE(8),
      flags,
      window: segment.readUInt16BE(14),
      urgent: segment.readUInt16BE(18),
      headerLen: hlen,
      options: segment.subarray(20, Math.min(hlen, segment.length)),
      checksum: segment.readUInt16BE(16),
    };
    if (hlen < 20 || hlen > segLen) {
      p.malformed ??= 'bad TCP data offset';
      return p;
    }
  } else if (proto === IPPROTO.ICMP || proto === IPPROTO.ICMPV6) {
    if (segment.length < 8) return cut(p, segLen < 8);
    p.icmp = { type: segment[0]!, code: segment[1]!, checksum: segment.readUInt16BE(2), rest: segment.subarray(4, 8) };
    hlen = 8;
  }
  p.payloadOffset = o + hlen;
  p.payloadLen = segLen - hlen;
  p.payload = r.subarray(Math.min(o + hlen, r.length), Math.min(end, r.length));
  if (hasHeader && whole && complete && checksumOffset(proto) !== undefined) {
    p.l4ChecksumOk = verifyL4Checksum(fam, src, dst, proto, segment);
    if (!p.l4ChecksumOk && isPartialL4Checksum(fam, src, dst, proto, segment)) p.l4ChecksumPartial = true;
  }
  return p;
}

function cut(p: ParsedPacket, malformed: boolean): ParsedPacket {
  if (malformed) p.malformed ??= 'L4 header longer than the IP payload';
  else p.truncated = true;
  return p;
}

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmp6' };

/** Whether the packet's L4 checksum is as a sender's stack leaves it: complete and right, or left
 * for offload (the pseudo-header sum); undefined when it cannot be checked. */
export function l4ChecksumSound(p: ParsedPacket): boolean | undefined {
  return p.l4ChecksumOk === undefined ? undefined : p.l4ChecksumOk || p.l4ChecksumPartial === true;
}

/** One line for assertion messages: "4 10.1.0.1:5000 > 10.2.0.2:6000 udp len 64 dscp 0 ttl 63 ck ip✓ l4✓". */
export function describePacket(p: ParsedPacket): string {
  if (p.arp) return `arp op ${p.arp.op} ${p.arp.senderIp} (${p.arp.senderMac}) > ${p.arp.targetIp}`;
  if (!p.family) return `ethertype 0x${p.ethertype.toString(16)} len ${p.origLen}`;
  const port = (a?: string, n?: number) => (n === undefined ? a : p.family === 6 ? `[${a}]:${n}` : `${a}:${n}`);
  const ck = (v?: boolean, partial?: boolean) => (v === undefined ? '?' : v ? 'ok' : partial ? 'partial' : 'BAD');
  const parts = [`${p.family}`, `${port(p.src, p.sport)} > ${port(p.dst, p.dport)}`, PROTO_NAMES[p.proto ?? -1] ?? `proto ${p.proto}`];
  if (p.tcpFlags !== undefined) parts.push(`[${tcpFlagString(p.tcpFlags)}]`);
  if (p.icmp) parts.push(`type ${p.icmp.type}/${p.icmp.code}`);
  parts.push(`len ${p.payloadLen}`, `dscp ${p.dscp}`, `ecn ${p.ecn}`, `ttl ${p.ttl}`);
  if (p.fragment) parts.push(`frag ${p.fragment.offset}${p.fragment.more ? '+' : ''}`);
  if (p.vlan) parts.push(`vlan ${p.vlan.id}`);
  parts.push(`cksum ip ${p.family === 4 ? ck(p.ipChecksumOk) : '-'} l4 ${ck(p.l4ChecksumOk, p.l4ChecksumPartial)}`);
  if (p.truncated) parts.push('truncated');
  if (p.malformed) parts.push(`malformed: ${p.malformed}`);
  return parts.join(' ');
}
