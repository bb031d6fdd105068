// A typed view on one packet in a buffer (an AF_XDP frame), for user-space modules: the headers
// parsed once, fields read in place, and the rewrites a module makes (DSCP, ports, payload) with
// the checksums put right. Nothing is copied.
import { foldSum, onesSum } from '../net/checksum.js';
import { bytesToAddr } from '../netaddr.js';

const ETH_P_IP = 0x0800,
  ETH_P_IPV6 = 0x86dd,
  ETH_P_8021Q = 0x8100,
  ETH_P_8021AD = 0x88a8;
const TCP = 6,
  UDP = 17,
  ICMP = 1,
  ICMPV6 = 58;
const IPV6_EXT = new Set([0, 43, 60, 51, 44]);

/** Where a packet may grow: the bytes of `buf` from `start` (its frame's first byte) that lie in
 * front of the packet. A packet grows and shrinks at the front; its end stays where it is. */
export interface Room {
  buf: Buffer;
  start: number;
}

type Layout = { l3: number; l4: number; family: 4 | 6; proto: number; fragment: boolean };
type Csum = 'ok' | 'partial' | 'bad' | 'none';

export class PacketView {
  /** the frame, from its Ethernet header to the end of the packet */
  get data(): Buffer {
    return this.buf;
  }
  /** offset of the IP header */
  get l3(): number {
    return this.at.l3;
  }
  /** offset of the TCP/UDP/ICMP header (its payload, for other protocols); -1 for a later fragment */
  get l4(): number {
    return this.at.l4;
  }
  get family(): 4 | 6 {
    return this.at.family;
  }
  get proto(): number {
    return this.at.proto;
  }
  get fragment(): boolean {
    return this.at.fragment;
  }
  /** Set by the rewrites here; set it yourself after writing `data`: the host then checks the
   * packet and recomputes its checksums before sending it on. */
  modified = false;
  /** the device redirect() sends the packet out of (0: none) */
  out = 0;
  /** the state of the checksum the packet came with (see noteChecksums) */
  private csum: Csum = 'none';

  private constructor(
    private buf: Buffer,
    private at: Layout,
    private readonly room?: Room,
  ) {}

  /** Parses an Ethernet frame; a string says why it is not an IP packet this view can handle.
   * With `room`, insert() may move the packet's start into it. */
  static parse(data: Buffer, room?: Room): PacketView | string {
    const at = layout(data);
    return typeof at === 'string' ? at : new PacketView(data, at, room);
  }

  /** Notes the state of the checksum the packet came with (the host does, before the module sees
   * it), so that finish() completes one left for offload. */
  noteChecksums(): void {
    this.csum = this.checksumState();
  }

  /**
   * Puts the checksums right as the packet stands: every one if the module rewrote the packet
   * (unless it came with a corrupt one, left so for the receiver to drop), or the one left for
   * offload. The host calls it before the packet goes on; insert() and remove() call it first.
   */
  finish(): void {
    if ((this.modified && this.csum !== 'bad') || this.csum === 'partial') this.fixChecksums();
    this.csum = 'ok';
    this.modified = false;
  }

  /**
   * Inserts `bytes` at offset `at` (14 or more: after the Ethernet header), moving what is in
   * front of it (the Ethernet header) into the room in front of the packet: encapsulation. The
   * checksums are put right first (finish); the inserted bytes are the module's, their checksums
   * included (or set `modified`, and the host recomputes every checksum). The packet is parsed
   * again: a result that is no IP packet throws, as does a packet without the room.
   */
  insert(at: number, bytes: Uint8Array): void {
    const n = bytes.length;
    if (!Number.isInteger(at) || at < 14 || at > this.buf.length)
      throw new RangeError(`insert at ${at}: use an offset from 14 (after the Ethernet header) to the packet's length`);
    const start = this.room ? this.buf.byteOffset - this.room.buf.byteOffset : 0;
    if (!this.room || start - n < this.room.start) throw new RangeError(`no room for ${n} more bytes in front of the packet`);
    this.finish();
    const b = this.room.buf;
    b.copyWithin(start - n, start, start + at);
    b.set(bytes, start - n + at);
    this.reparse(b.subarray(start - n, start + this.buf.length));
    this.csum = 'none';
  }

  /**
   * Removes the `n` bytes at offset `at` (14 or more), moving what is in front of them (the
   * Ethernet header) up: decapsulation. The checksums are put right first (finish); the packet
   * left is parsed again (a result that is no IP packet throws), and its own checksum state noted.
   */
  remove(at: number, n: number): void {
    if (!Number.isInteger(at) || !Number.isInteger(n) || at < 14 || n < 0 || at + n > this.buf.length)
      throw new RangeError(`remove ${n} bytes at ${at}: not within the packet (${this.buf.length} bytes, Ethernet header kept)`);
    this.finish();
    this.buf.copyWithin(n, 0, at);
    this.reparse(this.buf.subarray(n));
    this.noteChecksums();
  }

  /** Sends the packet out of device `ifindex` (its next hop found in the kernel's neighbour
   * table) instead of on along the chain: the modules after this one do not see it. At the tc
   * hooks only. */
  redirect(ifindex: number): void {
    if (!Number.isInteger(ifindex) || ifindex <= 0) throw new RangeError(`redirect: ${ifindex} is no device index`);
    this.out = ifindex;
  }

  private reparse(data: Buffer): void {
    const at = layout(data);
    if (typeof at === 'string') throw new Error(`the packet is no longer one itm can send on: ${at}`);
    this.buf = data;
    this.at = at;
    this.modified = false;
  }

  get src(): string {
    return this.family === 4 ? bytesToAddr(mapped(this.data, this.l3 + 12)) : bytesToAddr(this.data.subarray(this.l3 + 8, this.l3 + 24), 6);
  }
  get dst(): string {
    return this.family === 4
      ? bytesToAddr(mapped(this.data, this.l3 + 16))
      : bytesToAddr(this.data.subarray(this.l3 + 24, this.l3 + 40), 6);
  }
  private get hasPorts(): boolean {
    return this.l4 >= 0 && (this.proto === TCP || this.proto === UDP) && this.data.length >= this.l4 + 4;
  }
  get sport(): number {
    return this.hasPorts ? this.data.readUInt16BE(this.l4) : 0;
  }
  get dport(): number {
    return this.hasPorts ? this.data.readUInt16BE(this.l4 + 2) : 0;
  }
  get tcpFlags(): number {
    return this.proto === TCP && this.l4 >= 0 && this.data.length > this.l4 + 13 ? this.data[this.l4 + 13]! : 0;
  }

  /** the traffic-class byte (IPv4 TOS) */
  private get tclass(): number {
    return this.family === 4 ? this.data[this.l3 + 1]! : (this.data.readUInt16BE(this.l3) >> 4) & 0xff;
  }
  get dscp(): number {
    return this.tclass >> 2;
  }
  get ecn(): number {
    return this.tclass & 3;
  }

  /** Sets the DSCP, keeping ECN; the IPv4 header checksum follows. */
  setDscp(dscp: number): void {
    if (!(Number.isInteger(dscp) && dscp >= 0 && dscp <= 63)) throw new RangeError(`DSCP ${dscp} is not 0-63`);
    const tc = (dscp << 2) | this.ecn;
    this.modified = true;
    if (this.family === 4) {
      this.data[this.l3 + 1] = tc;
      this.fixIpv4Header();
    } else {
      const w = this.data.readUInt16BE(this.l3);
      this.data.writeUInt16BE((w & 0xf00f) | (tc << 4), this.l3);
    }
  }

  /** The IP packet's length by its header (IPv4 total length, IPv6 payload length + 40). */
  get ipLength(): number {
    return this.family === 4 ? this.data.readUInt16BE(this.l3 + 2) : this.data.readUInt16BE(this.l3 + 4) + 40;
  }

  /**
   * Why the packet must not be sent as it is, if it must not: what a module hands back is checked
   * before it goes out (a length beyond the frame, a broken header length).
   */
  validate(): string | undefined {
    if (this.family === 4) {
      const ihl = (this.data[this.l3]! & 0xf) * 4;
      if (this.data[this.l3]! >> 4 !== 4 || ihl < 20) return 'the IPv4 header is broken (version or header length)';
      if (this.ipLength < ihl) return 'the IPv4 total length is shorter than its header';
    } else if (this.data[this.l3]! >> 4 !== 6) {
      return 'the IPv6 version field is broken';
    }
    if (this.l3 + this.ipLength > this.data.length)
      return `the IP length (${this.ipLength}) runs past the frame (${this.data.length - this.l3} bytes after the Ethernet header)`;
    return undefined;
  }

  /**
   * Recomputes every checksum: the IPv4 header's and the whole TCP/UDP/ICMP checksum. Needed for
   * packets whose checksum was left to offload (sent by this host) or that a module rewrote.
   */
  fixChecksums(): void {
    if (this.family === 4) this.fixIpv4Header();
    if (this.l4 < 0 || this.validate()) return;
    const end = this.l3 + this.ipLength;
    const off = this.proto === TCP ? 16 : this.proto === UDP ? 6 : this.proto === ICMP || this.proto === ICMPV6 ? 2 : -1;
    if (off < 0 || end < this.l4 + off + 2) return;
    this.data.writeUInt16BE(0, this.l4 + off);
    let acc = onesSum(this.data, 0, this.l4, end);
    if (this.proto !== ICMP) acc = this.pseudoSum(acc, end - this.l4);
    let sum = ~foldSum(acc) & 0xffff;
    if (this.proto === UDP && sum === 0) sum = 0xffff;
    this.data.writeUInt16BE(sum, this.l4 + off);
  }

  /**
   * The state of the TCP/UDP checksum as the packet came: 'ok'; 'partial', when it holds only the
   * pseudo-header sum (a packet whose checksum was left for offload: sent by this host, or by a
   * veth peer); 'bad' (corrupted on the way: left so, for the receiver to drop); 'none' when the
   * packet has no such checksum to check (another protocol, a fragment, UDP without checksum).
   */
  checksumState(): 'ok' | 'partial' | 'bad' | 'none' {
    if (this.l4 < 0 || (this.proto !== TCP && this.proto !== UDP) || this.validate()) return 'none';
    const end = this.l3 + this.ipLength;
    const at = this.l4 + (this.proto === TCP ? 16 : 6);
    if (end < at + 2) return 'none';
    const field = this.data.readUInt16BE(at);
    if (this.proto === UDP && field === 0 && this.family === 4) return 'none';
    const pseudo = foldSum(this.pseudoSum(0, end - this.l4));
    if (foldSum(onesSum(this.data, pseudo, this.l4, end)) === 0xffff) return 'ok';
    return field === pseudo ? 'partial' : 'bad';
  }

  private pseudoSum(acc: number, l4len: number): number {
    if (this.family === 4) {
      acc = onesSum(this.data, acc, this.l3 + 12, this.l3 + 20);
      return acc + this.proto + l4len;
    }
    acc = onesSum(this.data, acc, this.l3 + 8, this.l3 + 40);
    return acc + (l4len >>> 16) + (l4len & 0xffff) + this.proto;
  }

  private fixIpv4Header(): void {
    const ihl = (this.data[this.l3]! & 0xf) * 4;
    this.data.writeUInt16BE(0, this.l3 + 10);
    this.data.writeUInt16BE(~foldSum(onesSum(this.data, 0, this.l3, this.l3 + ihl)) & 0xffff, this.l3 + 10);
  }
}

function mapped(b: Buffer, at: number): Buffer {
  const m = Buffer.alloc(16);
  m[10] = 0xff;
  m[11] = 0xff;
  b.copy(m, 12, at, at + 4);
  return m;
}

/** Where the headers of an Ethernet frame are; a string says why it is not an IP packet a view
 * can handle. */
function layout(data: Buffer): Layout | string {
  if (data.length < 14) return 'shorter than an Ethernet header';
  let type = data.readUInt16BE(12);
  let l3 = 14;
  if (type === ETH_P_8021Q || type === ETH_P_8021AD) {
    if (data.length < 18) return 'truncated VLAN tag';
    type = data.readUInt16BE(16);
    l3 = 18;
  }
  if (type === ETH_P_IP) {
    if (data.length < l3 + 20) return 'truncated IPv4 header';
    const ihl = (data[l3]! & 0xf) * 4;
    if (data[l3]! >> 4 !== 4 || ihl < 20) return 'malformed IPv4 header';
    if (data.length < l3 + ihl) return 'truncated IPv4 options';
    const later = (data.readUInt16BE(l3 + 6) & 0x1fff) !== 0;
    return { l3, l4: later ? -1 : l3 + ihl, family: 4, proto: data[l3 + 9]!, fragment: later };
  }
  if (type === ETH_P_IPV6) {
    if (data.length < l3 + 40) return 'truncated IPv6 header';
    if (data[l3]! >> 4 !== 6) return 'malformed IPv6 header';
    let nh = data[l3 + 6]!;
    let off = l3 + 40;
    for (let i = 0; i < 6 && IPV6_EXT.has(nh); i++) {
      if (data.length < off + 8) return 'truncated IPv6 extension header';
      if (nh === 44) {
        const later = (data.readUInt16BE(off + 2) & 0xfff8) !== 0;
        const next = data[off]!;
        off += 8;
        if (later) return { l3, l4: -1, family: 6, proto: next, fragment: true };
        nh = next;
        continue;
      }
      const len = nh === 51 ? (data[off + 1]! + 2) * 4 : (data[off + 1]! + 1) * 8;
      nh = data[off]!;
      off += len;
    }
    if (IPV6_EXT.has(nh)) return 'too many IPv6 extension headers';
    return { l3, l4: off, family: 6, proto: nh, fragment: false };
  }
  return `not IP (ethertype 0x${type.toString(16)})`;
}
