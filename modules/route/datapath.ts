// route's data path in TypeScript (`--datapath user`): what route.bpf.c does, done by the module's
// host on the packets AF_XDP brings it, so the kernel and user versions of one function can be
// compared. Same wire format, same checks in the same order, same counters; a node with one data
// path talks to a node with the other.
//
// State is the node's, shared with the kernel and with the hosts of the node's other instances:
// sequence numbers (route_tx) and replay windows (route_rx) are mmapable arrays this host maps and
// changes with atomic operations, as the kernel does; the counters go to route_ustats, the same
// way. The peers and next hops (route_peers, route_best, written by the control plane in itmd) are
// read again every REFRESH_MS: a change of path reaches the data path that much later.
import { atomicAddU64, atomicRaiseU64, decode, foldSum, onesSum, type BpfMap, type PacketView, type UserContext } from '../../src/sdk.js';
import * as abi from './route.abi.js';
import { ipv4, u32 } from './peers.js';
import type { TagKey } from './tag.js';
import type { Topology } from './topology.js';
import { F_CTL, FIELD, HDR_LEN, Type, VERSION, tagInto, tagMatches, writeTag } from './wire.js';

const REFRESH_MS = 20;
const OVERHEAD = abi.ROUTE_OVERHEAD;
/** the most the tag covers: the overlay header and MAX_INNER bytes */
const MAX_TAGGED = abi.ROUTE_MAX_BYTES;
const WINDOW = abi.ROUTE_WINDOW;
const WINDOW_BYTES = abi.route_window.size;
const UDP = 17,
  TCP = 6;

interface Peer {
  wire: number;
  slot: number;
  key: TagKey;
  keyId: number;
  addr: number;
  ifindex: number;
  src: number;
  mtu: number;
}

type Counter = keyof abi.RouteStats;
const statOff = new Map(abi.route_stats.fields.map((f) => [f.name as Counter, f.offset]));

/** an IPv4 address in a packet (or in dotted text) as a host-order number */
const addrAt = (b: Buffer, at: number): number => b.readUInt32BE(at);
const addrOf = (s: string): number => ipv4(s).readUInt32BE(0);

/** Where the inner packet's L4 checksum is, from the overlay header at `hoff`: the tag leaves it
 * out (offloads may fill it in after the tag); undefined for none (route.bpf.c's inner_csum). */
function innerCsum(b: Buffer, hoff: number): number | undefined {
  const ip = hoff + HDR_LEN;
  if (b.length < ip + 10 || b[ip]! >> 4 !== 4 || (b.readUInt16BE(ip + 6) & 0x1fff) !== 0) return undefined;
  const ihl = (b[ip]! & 0xf) * 4;
  return b[ip + 9] === TCP ? HDR_LEN + ihl + 16 : b[ip + 9] === UDP ? HDR_LEN + ihl + 6 : undefined;
}

export class UserDatapath {
  private readonly me: number;
  private readonly port: number;
  private readonly byWire = new Map<number, Peer>();
  /** every address a peer's tunnel packets may come from → its wire id */
  private readonly owners = new Map<number, number>();
  /** destinations, longest prefix first */
  private readonly dests: Array<{ net: number; mask: number; wire: number }>;
  private readonly best = new Map<number, number>();
  private readonly tx: Buffer;
  private readonly rx: Buffer;
  private readonly counts: Buffer;
  private readonly outer = Buffer.alloc(OVERHEAD);
  private refreshed = 0;

  constructor(
    t: Topology,
    private readonly open: (map: string) => BpfMap,
  ) {
    this.me = t.wire;
    this.port = t.port;
    for (const n of t.neighbours) {
      this.byWire.set(n.wire, {
        wire: n.wire,
        slot: n.slot,
        key: n.tag,
        keyId: n.keyId,
        addr: addrOf(n.address),
        ifindex: 0,
        src: 0,
        mtu: 0,
      });
      for (const a of [n.address, ...n.also]) this.owners.set(addrOf(a), n.wire);
    }
    this.dests = t.destinations
      .filter((d) => d.prefix.family === 4)
      .map((d) => {
        const mask = d.prefix.len === 0 ? 0 : (~0 << (32 - d.prefix.len)) >>> 0;
        return { net: (d.prefix.addr.readUInt32BE(12) & mask) >>> 0, mask, wire: d.wire };
      })
      .sort((a, b) => b.mask - a.mask);
    this.tx = open('route_tx').mmap().mem;
    this.rx = open('route_rx').mmap().mem;
    this.counts = open('route_ustats').mmap().mem;
    this.refresh();
  }

  /** The peers' underlay routes and the next hops, as the control plane last wrote them. */
  private refresh(): void {
    const peers = this.open('route_peers'),
      best = this.open('route_best');
    for (const p of this.byWire.values()) {
      const v = peers.lookup(u32(p.wire));
      if (!v) continue;
      const e = decode<abi.RoutePeer>(abi.route_peer, v);
      p.ifindex = e.ifindex;
      p.src = e.src ? Buffer.from(u32(e.src)).readUInt32BE(0) : 0;
      p.mtu = e.mtu;
    }
    for (const d of this.dests) {
      const v = best.lookup(u32(d.wire));
      if (v) this.best.set(d.wire, v.readUInt32LE(0));
      else this.best.delete(d.wire);
    }
    this.refreshed = Date.now();
  }

  private count(what: Counter): void {
    atomicAddU64(this.counts, statOff.get(what)!, 1n);
  }

  private nextSeq(p: Peer): bigint {
    return atomicAddU64(this.tx, p.slot * 8, 1n) + 1n;
  }

  /** One packet at the module's hook: 'drop', or undefined to let it go on (as rewritten). */
  process(v: PacketView, egress: boolean): 'drop' | undefined {
    if (Date.now() - this.refreshed >= REFRESH_MS) this.refresh();
    return egress ? this.encapsulate(v) : this.decapsulate(v);
  }

  private destOf(addr: number): number | undefined {
    for (const d of this.dests) if ((addr & d.mask) >>> 0 === d.net) return d.wire;
    return undefined;
  }

  private encapsulate(v: PacketView): 'drop' | undefined {
    const b = v.data,
      l3 = v.l3;
    if (v.family !== 4) return undefined;
    if (v.proto === UDP && v.dport === this.port) return undefined; // a tunnel packet already
    const dest = this.destOf(addrAt(b, l3 + 16));
    if (dest === undefined || dest === this.me) return undefined;
    const next = this.best.get(dest);
    const peer = next === undefined ? undefined : this.byWire.get(next);
    if (!peer) {
      this.count('no_path');
      return undefined;
    }
    if (!peer.ifindex) {
      this.count('no_route');
      return 'drop';
    }
    if (v.proto === TCP && v.tcpFlags & 0x02 && peer.mtu > OVERHEAD + 40) this.clampMss(v, peer.mtu - OVERHEAD - 40);
    const len = b.length - l3;
    if (len + OVERHEAD > peer.mtu) {
      this.count('too_big');
      return 'drop';
    }
    if (len + HDR_LEN > MAX_TAGGED) return this.drop('errors'); // the kernel cannot tag it either
    // the flow's UDP source port, so the underlay can spread flows (ECMP) as the kernel's does
    const hash = (b.readUInt32BE(l3 + 12) ^ b.readUInt32BE(l3 + 16) ^ ((v.sport << 16) | v.dport) ^ v.proto) >>> 0;
    const tos = b[l3 + 1]!;
    // what seal() does not write: enough IPv4 for the packet to parse as one, and the overlay
    // header's fixed fields
    const o = this.outer;
    o.fill(0);
    o[0] = 0x45;
    o[9] = UDP;
    o[FIELD.version + 28] = VERSION;
    o[FIELD.type + 28] = Type.Data;
    o.writeUInt32BE(this.me, FIELD.origin + 28);
    o.writeUInt32BE(dest, FIELD.to + 28);
    v.insert(l3, o);
    this.seal(v.data, l3, peer, tos, (hash ^ (hash >>> 14)) & 0x3fff);
    v.redirect(peer.ifindex);
    this.count('encapsulated');
    return undefined;
  }

  /** Writes the outer IPv4 and UDP headers at `l3` and this hop's fields of the overlay header
   * after them (from, key id, a new sequence number), then tags the packet (send_tunnel). */
  private seal(b: Buffer, l3: number, peer: Peer, tos: number, sport: number): void {
    const len = b.length - l3,
      h = l3 + 28;
    b[l3] = 0x45;
    b[l3 + 1] = tos;
    b.writeUInt16BE(len, l3 + 2);
    b.writeUInt32BE(0, l3 + 4); // id, flags, fragment offset
    b[l3 + 8] = 64;
    b[l3 + 9] = UDP;
    b.writeUInt32BE(peer.src, l3 + 12);
    b.writeUInt32BE(peer.addr, l3 + 16);
    b.writeUInt16BE(0, l3 + 10);
    b.writeUInt16BE(~foldSum(onesSum(b, 0, l3, l3 + 20)) & 0xffff, l3 + 10);
    b.writeUInt16BE(sport | 0xc000, l3 + 20);
    b.writeUInt16BE(this.port, l3 + 22);
    b.writeUInt16BE(len - 20, l3 + 24);
    b.writeUInt16BE(0, l3 + 26); // no UDP checksum (IPv4 allows it; the tag covers what matters)
    b[h + FIELD.keyId] = peer.keyId;
    b.writeUInt32BE(this.me, h + FIELD.from);
    b.writeBigUInt64BE(this.nextSeq(peer), h + FIELD.seq);
    const pkt = b.subarray(h);
    tagInto(pkt, peer.key, innerCsum(b, h));
    writeTag(pkt);
  }

  /** Lowers the MSS option of a TCP SYN to `mss` if it is above (clamp_mss). */
  private clampMss(v: PacketView, mss: number): void {
    const b = v.data,
      l4 = v.l4;
    if (l4 < 0 || b.length < l4 + 20) return;
    const end = Math.min(l4 + (b[l4 + 12]! >> 4) * 4, b.length);
    for (let off = l4 + 20; off < end; ) {
      const kind = b[off]!;
      if (kind === 0) return;
      if (kind === 1) {
        off++;
        continue;
      }
      const olen = b[off + 1] ?? 0;
      if (olen < 2 || off + olen > end) return;
      if (kind === 2 && olen === 4) {
        if (b.readUInt16BE(off + 2) > mss) {
          b.writeUInt16BE(mss, off + 2);
          v.modified = true; // the TCP checksum is recomputed
          this.count('mss_clamped');
        }
        return;
      }
      off += olen;
    }
  }

  private decapsulate(v: PacketView): 'drop' | undefined {
    const b = v.data,
      l3 = v.l3;
    if (v.family !== 4 || v.proto !== UDP || v.l4 < 0 || v.dport !== this.port) return undefined;
    const hoff = v.l4 + 8;
    if (b.length < hoff + HDR_LEN) return this.drop('truncated');
    const type = b[hoff + FIELD.type]!;
    if (b[hoff + FIELD.version] !== VERSION || type < Type.Data || type > Type.Ack || v.l4 !== l3 + 20) return this.drop('bad_version');
    if (type === Type.Data && b.length < hoff + HDR_LEN + 20) return this.drop('truncated');
    if (b.length - hoff > MAX_TAGGED) return this.drop('errors');
    // the outer source is the address of the peer the header names
    const from = b.readUInt32BE(hoff + FIELD.from);
    const peer = this.byWire.get(from);
    if (this.owners.get(addrAt(b, l3 + 12)) !== from || !peer) return this.drop('not_peer');
    if (b[hoff + FIELD.keyId] !== peer.keyId) return this.drop('bad_key');
    // a data packet's inner L4 checksum is left out of the tag; probes have none
    const pkt = b.subarray(hoff);
    tagInto(pkt, peer.key, type === Type.Data ? innerCsum(b, hoff) : undefined);
    if (!tagMatches(pkt)) return this.drop('bad_tag');
    const flags = b[hoff + FIELD.flags]!,
      seq = b.readBigUInt64BE(hoff + FIELD.seq);
    const w = (peer.slot * 2 + (flags & F_CTL ? 1 : 0)) * WINDOW_BYTES + Number(seq & BigInt(WINDOW - 1)) * 8;
    if (seq === 0n || !atomicRaiseU64(this.rx, w, seq)) return this.drop('replayed');

    const to = b.readUInt32BE(hoff + FIELD.to);
    if (to === this.me) {
      if (type !== Type.Data) {
        this.count('to_control');
        return undefined; // to the control plane's socket
      }
      v.remove(l3, OVERHEAD);
      this.count('decapsulated');
      return undefined;
    }
    // for another node: relay it there directly, once, with this node's own header
    const np = this.byWire.get(to);
    if (from !== b.readUInt32BE(hoff + FIELD.origin) || !np || to === from) return this.drop('bad_hops');
    if (!np.ifindex) return this.drop('no_route');
    b[hoff + FIELD.flags] = flags & ~F_CTL; // this node's sequence numbers from here
    this.seal(b, l3, np, b[l3 + 1]!, v.sport);
    v.redirect(np.ifindex);
    this.count('relayed');
    return undefined;
  }

  private drop(why: Counter): 'drop' {
    this.count(why);
    return 'drop';
  }
}

/** The data path of an instance, made at its host's start. */
export function datapathOf(ctx: UserContext, t: Topology): UserDatapath {
  let d = ctx.state.datapath as UserDatapath | undefined;
  if (!d) {
    if (!ctx.open) throw new Error('route: the user data path needs the maps of its object (ctx.open)');
    ctx.state.datapath = d = new UserDatapath(t, ctx.open);
  }
  return d;
}
