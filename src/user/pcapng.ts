// pcapng (draft-ietf-opsawg-pcapng), the part a capture needs: a writer of Section Header,
// Interface Description, Enhanced Packet and Interface Statistics blocks, little-endian, with
// nanosecond timestamps; a reader that checks what it reads (for tests and tools); and a scan of a
// file on disk that finds where its last complete block ends, so that a capture can go on after
// its writer died mid-block.
import { fstatSync, readSync } from 'node:fs';

export const BLOCK_SHB = 0x0a0d0d0a;
export const BLOCK_IDB = 0x00000001;
export const BLOCK_ISB = 0x00000005;
export const BLOCK_EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;

export const LINKTYPE_ETHERNET = 1;

/** option codes; 0 and 1 are common to every block, the others are per block type */
export const OPT_ENDOFOPT = 0;
export const OPT_COMMENT = 1;
export const SHB_HARDWARE = 2,
  SHB_OS = 3,
  SHB_USERAPPL = 4;
export const IF_NAME = 2,
  IF_DESCRIPTION = 3,
  IF_TSRESOL = 9;
export const EPB_FLAGS = 2;
export const ISB_STARTTIME = 2,
  ISB_ENDTIME = 3,
  ISB_IFRECV = 4,
  ISB_USRDELIV = 7;

/** epb_flags bits 0-1: the packet's direction */
export const EPB_INBOUND = 1,
  EPB_OUTBOUND = 2;

const pad4 = (n: number) => (n + 3) & ~3;

export interface SectionInfo {
  hardware?: string;
  os?: string;
  application?: string;
  /** one opt_comment each */
  comments?: string[];
}

export interface InterfaceInfo {
  name: string;
  description?: string;
  /** default Ethernet */
  linkType?: number;
  /** the most bytes of a packet written; 0 for no limit */
  snaplen: number;
}

export interface PacketOptions {
  /** the packet's length on the wire, when `data` holds less (default: data.length) */
  origLen?: number;
  /** an opt_comment; a Buffer (UTF-8) saves encoding the same comment for every packet */
  comment?: string | Buffer;
  /** epb_flags (EPB_INBOUND, EPB_OUTBOUND) */
  flags?: number;
}

export interface InterfaceStatistics {
  /** when the statistics were taken, ns since the epoch */
  tsNs: bigint;
  startNs?: bigint;
  endNs?: bigint;
  /** isb_ifrecv: packets the interface saw */
  received?: bigint;
  /** isb_usrdeliv: packets that were delivered (written) */
  delivered?: bigint;
  comments?: string[];
}

type Option = { code: number; value: Buffer };

const textOpt = (code: number, s: string | Buffer): Option => ({ code, value: typeof s === 'string' ? Buffer.from(s, 'utf8') : s });
function u64Opt(code: number, v: bigint): Option {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return { code, value: b };
}
/** a timestamp option: high 32 bits first, as in an EPB */
function tsOpt(code: number, ns: bigint): Option {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(Number(ns >> 32n), 0);
  b.writeUInt32LE(Number(ns & 0xffffffffn), 4);
  return { code, value: b };
}

/** bytes the options take, with their end marker (none when there are none) */
function optionsLength(opts: readonly Option[]): number {
  if (!opts.length) return 0;
  let n = 4;
  for (const o of opts) n += 4 + pad4(o.value.length);
  return n;
}

function writeOptions(b: Buffer, at: number, opts: readonly Option[]): number {
  if (!opts.length) return at;
  for (const o of opts) {
    if (o.value.length > 0xffff) throw new RangeError(`pcapng option ${o.code} is longer than 65535 bytes`);
    b.writeUInt16LE(o.code, at);
    b.writeUInt16LE(o.value.length, at + 2);
    o.value.copy(b, at + 4);
    const end = at + 4 + pad4(o.value.length);
    b.fill(0, at + 4 + o.value.length, end);
    at = end;
  }
  b.writeUInt32LE(OPT_ENDOFOPT, at);
  return at + 4;
}

/**
 * Writes one section: its header at construction, then interfaces, packets and statistics, into
 * a buffer handed to `sink` whenever it holds `flushAt` bytes, and on flush(). The sink must take
 * the bytes before it returns (they are overwritten after); if it throws, nothing is lost from the
 * buffer, and the next flush tries again.
 */
export class PcapngWriter {
  private buf: Buffer;
  private pos = 0;
  private readonly snaplens: number[] = [];
  /** bytes handed to the sink */
  flushed = 0;

  constructor(
    private readonly sink: (chunk: Buffer) => void,
    section: SectionInfo = {},
    private readonly flushAt = 64 * 1024,
  ) {
    this.buf = Buffer.allocUnsafe(2 * flushAt);
    const opts: Option[] = [];
    if (section.hardware) opts.push(textOpt(SHB_HARDWARE, section.hardware));
    if (section.os) opts.push(textOpt(SHB_OS, section.os));
    if (section.application) opts.push(textOpt(SHB_USERAPPL, section.application));
    for (const c of section.comments ?? []) opts.push(textOpt(OPT_COMMENT, c));
    const total = 28 + optionsLength(opts);
    const b = this.reserve(total),
      p = this.pos;
    b.writeUInt32LE(BLOCK_SHB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt32LE(BYTE_ORDER_MAGIC, p + 8);
    b.writeUInt16LE(1, p + 12); // version 1.0
    b.writeUInt16LE(0, p + 14);
    b.writeBigInt64LE(-1n, p + 16); // section length not given: the section is written as it goes
    this.end(writeOptions(b, p + 24, opts), total);
  }

  /** bytes written and not yet handed to the sink */
  get buffered(): number {
    return this.pos;
  }

  /** Describes an interface (timestamps in ns); returns its id, for packet(). */
  addInterface(i: InterfaceInfo): number {
    const opts: Option[] = [textOpt(IF_NAME, i.name)];
    if (i.description) opts.push(textOpt(IF_DESCRIPTION, i.description));
    opts.push({ code: IF_TSRESOL, value: Buffer.from([9]) });
    const total = 20 + optionsLength(opts);
    const b = this.reserve(total),
      p = this.pos;
    b.writeUInt32LE(BLOCK_IDB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt16LE(i.linkType ?? LINKTYPE_ETHERNET, p + 8);
    b.writeUInt16LE(0, p + 10);
    b.writeUInt32LE(i.snaplen, p + 12);
    this.end(writeOptions(b, p + 16, opts), total);
    this.snaplens.push(i.snaplen);
    return this.snaplens.length - 1;
  }

  /** One packet, cut to its interface's snaplen, at `tsNs` (ns since the epoch). */
  packet(iface: number, tsNs: bigint, data: Buffer, o: PacketOptions = {}): void {
    const snaplen = this.snaplens[iface];
    if (snaplen === undefined) throw new RangeError(`pcapng: no interface ${iface} in this section`);
    const cap = snaplen && data.length > snaplen ? snaplen : data.length;
    const comment = o.comment === undefined ? undefined : typeof o.comment === 'string' ? Buffer.from(o.comment, 'utf8') : o.comment;
    let optLen = 0;
    if (comment) optLen += 4 + pad4(comment.length);
    if (o.flags !== undefined) optLen += 8;
    if (optLen) optLen += 4;
    const total = 28 + pad4(cap) + optLen + 4;
    const b = this.reserve(total);
    let p = this.pos;
    b.writeUInt32LE(BLOCK_EPB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt32LE(iface, p + 8);
    b.writeUInt32LE(Number(tsNs >> 32n), p + 12);
    b.writeUInt32LE(Number(tsNs & 0xffffffffn), p + 16);
    b.writeUInt32LE(cap, p + 20);
    b.writeUInt32LE(o.origLen ?? data.length, p + 24);
    data.copy(b, p + 28, 0, cap);
    b.fill(0, p + 28 + cap, p + 28 + pad4(cap));
    p += 28 + pad4(cap);
    if (comment) {
      if (comment.length > 0xffff) throw new RangeError('pcapng: a comment is longer than 65535 bytes');
      b.writeUInt16LE(OPT_COMMENT, p);
      b.writeUInt16LE(comment.length, p + 2);
      comment.copy(b, p + 4);
      b.fill(0, p + 4 + comment.length, p + 4 + pad4(comment.length));
      p += 4 + pad4(comment.length);
    }
    if (o.flags !== undefined) {
      b.writeUInt16LE(EPB_FLAGS, p);
      b.writeUInt16LE(4, p + 2);
      b.writeUInt32LE(o.flags >>> 0, p + 4);
      p += 8;
    }
    if (optLen) {
      b.writeUInt32LE(OPT_ENDOFOPT, p);
      p += 4;
    }
    this.end(p, total);
  }

  /** An Interface Statistics Block: what an interface saw and delivered. */
  statistics(iface: number, s: InterfaceStatistics): void {
    if (this.snaplens[iface] === undefined) throw new RangeError(`pcapng: no interface ${iface} in this section`);
    const opts: Option[] = [];
    for (const c of s.comments ?? []) opts.push(textOpt(OPT_COMMENT, c));
    if (s.startNs !== undefined) opts.push(tsOpt(ISB_STARTTIME, s.startNs));
    if (s.endNs !== undefined) opts.push(tsOpt(ISB_ENDTIME, s.endNs));
    if (s.received !== undefined) opts.push(u64Opt(ISB_IFRECV, s.received));
    if (s.delivered !== undefined) opts.push(u64Opt(ISB_USRDELIV, s.delivered));
    const total = 24 + optionsLength(opts);
    const b = this.reserve(total),
      p = this.pos;
    b.writeUInt32LE(BLOCK_ISB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt32LE(iface, p + 8);
    b.writeUInt32LE(Number(s.tsNs >> 32n), p + 12);
    b.writeUInt32LE(Number(s.tsNs & 0xffffffffn), p + 16);
    this.end(writeOptions(b, p + 20, opts), total);
  }

  /** Hands what is buffered to the sink. */
  flush(): void {
    if (!this.pos) return;
    this.sink(this.buf.subarray(0, this.pos));
    this.flushed += this.pos;
    this.pos = 0;
  }

  /** room for a block of n bytes at this.pos */
  private reserve(n: number): Buffer {
    if (this.pos + n > this.buf.length) {
      this.flush();
      if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    }
    return this.buf;
  }

  /** closes the block that started at this.pos and ends (before its trailing length) at `at` */
  private end(at: number, total: number): void {
    if (at + 4 - this.pos !== total) throw new Error(`pcapng: block of ${at + 4 - this.pos} bytes, announced ${total}`);
    this.buf.writeUInt32LE(total, at);
    this.pos = at + 4;
    if (this.pos >= this.flushAt) this.flush();
  }
}

// -------------------------------------------------------------------------------------------------
// Reading

export interface PcapngOption {
  code: number;
  value: Buffer;
}
export interface PcapngSection {
  offset: number;
  options: PcapngOption[];
  comments: string[];
  application?: string;
}
export interface PcapngInterface {
  section: number;
  linkType: number;
  snaplen: number;
  name?: string;
  description?: string;
  /** the timestamp unit, as the if_tsresol byte (default 6: µs) */
  tsresol: number;
}
export interface PcapngPacket {
  section: number;
  /** the interface's id in its section */
  iface: number;
  /** in the interface's units (see tsresol) */
  ts: bigint;
  capLen: number;
  origLen: number;
  data: Buffer;
  comments: string[];
  flags?: number;
}
export interface PcapngStatistics {
  section: number;
  iface: number;
  ts: bigint;
  options: PcapngOption[];
  comments: string[];
  received?: bigint;
  delivered?: bigint;
}
export interface Pcapng {
  sections: PcapngSection[];
  interfaces: PcapngInterface[];
  packets: PcapngPacket[];
  statistics: PcapngStatistics[];
}

function readOptions(b: Buffer, at: number, end: number, where: string): PcapngOption[] {
  const out: PcapngOption[] = [];
  while (at < end) {
    if (at + 4 > end) throw new Error(`pcapng: ${where}: an option header runs past the block`);
    const code = b.readUInt16LE(at),
      len = b.readUInt16LE(at + 2);
    if (code === OPT_ENDOFOPT) {
      if (len !== 0) throw new Error(`pcapng: ${where}: opt_endofopt with length ${len}`);
      at += 4;
      if (at !== end) throw new Error(`pcapng: ${where}: ${end - at} bytes after opt_endofopt`);
      return out;
    }
    if (at + 4 + pad4(len) > end) throw new Error(`pcapng: ${where}: option ${code} (${len} bytes) runs past the block`);
    out.push({ code, value: Buffer.from(b.subarray(at + 4, at + 4 + len)) });
    at += 4 + pad4(len);
  }
  // the end marker may be left out; a reader must take options without it
  return out;
}

const comments = (opts: PcapngOption[]) => opts.filter((o) => o.code === OPT_COMMENT).map((o) => o.value.toString('utf8'));
const u64 = (o: PcapngOption | undefined) => (o && o.value.length === 8 ? o.value.readBigUInt64LE() : undefined);

/**
 * Reads a whole little-endian pcapng file, checking each block's two length fields, its padding
 * and its options; throws, naming the offset, at the first thing that is wrong (a block cut short
 * at the end included).
 */
export function readPcapng(b: Buffer): Pcapng {
  const out: Pcapng = { sections: [], interfaces: [], packets: [], statistics: [] };
  let ifBase = 0;
  for (let off = 0; off < b.length; ) {
    if (off + 12 > b.length) throw new Error(`pcapng: at ${off}: ${b.length - off} bytes left, too few for a block`);
    const type = b.readUInt32LE(off),
      total = b.readUInt32LE(off + 4);
    if (off === 0 && type !== BLOCK_SHB) throw new Error(`pcapng: the file does not start with a section header (0x${type.toString(16)})`);
    if (total < 12 || total % 4) throw new Error(`pcapng: at ${off}: block length ${total} is not a multiple of 4 of at least 12`);
    if (off + total > b.length) throw new Error(`pcapng: at ${off}: block of ${total} bytes runs past the end of the file (${b.length})`);
    if (b.readUInt32LE(off + total - 4) !== total)
      throw new Error(`pcapng: at ${off}: trailing length ${b.readUInt32LE(off + total - 4)} differs from ${total}`);
    const end = off + total - 4;
    const where = `block 0x${type.toString(16)} at ${off}`;
    const section = out.sections.length - 1;
    switch (type) {
      case BLOCK_SHB: {
        if (b.readUInt32LE(off + 8) !== BYTE_ORDER_MAGIC)
          throw new Error(`pcapng: at ${off}: not a little-endian section (byte-order magic 0x${b.readUInt32LE(off + 8).toString(16)})`);
        if (b.readUInt16LE(off + 12) !== 1) throw new Error(`pcapng: at ${off}: major version ${b.readUInt16LE(off + 12)}`);
        const options = readOptions(b, off + 24, end, where);
        const appl = options.find((o) => o.code === SHB_USERAPPL);
        out.sections.push({
          offset: off,
          options,
          comments: comments(options),
          ...(appl ? { application: appl.value.toString('utf8') } : {}),
        });
        ifBase = out.interfaces.length;
        break;
      }
      case BLOCK_IDB: {
        const options = readOptions(b, off + 16, end, where);
        const text = (c: number) => options.find((o) => o.code === c)?.value.toString('utf8');
        const res = options.find((o) => o.code === IF_TSRESOL);
        const name = text(IF_NAME),
          description = text(IF_DESCRIPTION);
        out.interfaces.push({
          section,
          linkType: b.readUInt16LE(off + 8),
          snaplen: b.readUInt32LE(off + 12),
          tsresol: res ? res.value[0]! : 6,
          ...(name !== undefined ? { name } : {}),
          ...(description !== undefined ? { description } : {}),
        });
        break;
      }
      case BLOCK_EPB: {
        const iface = b.readUInt32LE(off + 8);
        if (ifBase + iface >= out.interfaces.length)
          throw new Error(`pcapng: at ${off}: packet on interface ${iface}, which its section does not describe`);
        const capLen = b.readUInt32LE(off + 20),
          origLen = b.readUInt32LE(off + 24);
        if (off + 28 + pad4(capLen) > end) throw new Error(`pcapng: at ${off}: captured length ${capLen} runs past the block`);
        const options = readOptions(b, off + 28 + pad4(capLen), end, where);
        const flags = options.find((o) => o.code === EPB_FLAGS);
        out.packets.push({
          section,
          iface,
          ts: (BigInt(b.readUInt32LE(off + 12)) << 32n) | BigInt(b.readUInt32LE(off + 16)),
          capLen,
          origLen,
          data: Buffer.from(b.subarray(off + 28, off + 28 + capLen)),
          comments: comments(options),
          ...(flags ? { flags: flags.value.readUInt32LE() } : {}),
        });
        break;
      }
      case BLOCK_ISB: {
        const options = readOptions(b, off + 20, end, where);
        const received = u64(options.find((o) => o.code === ISB_IFRECV)),
          delivered = u64(options.find((o) => o.code === ISB_USRDELIV));
        out.statistics.push({
          section,
          iface: b.readUInt32LE(off + 8),
          ts: (BigInt(b.readUInt32LE(off + 12)) << 32n) | BigInt(b.readUInt32LE(off + 16)),
          options,
          comments: comments(options),
          ...(received !== undefined ? { received } : {}),
          ...(delivered !== undefined ? { delivered } : {}),
        });
        break;
      }
      default:
        break; // other blocks are skipped, as the format asks
    }
    off += total;
  }
  return out;
}

export interface PcapngScan {
  /** where the last complete block ends: what follows is a block cut short (or not pcapng) */
  end: number;
  /** the comments of the first section's header; undefined when the file is not little-endian pcapng */
  firstComments?: string[];
  /** the packets in the complete blocks, and their captured bytes */
  packets: number;
  bytes: number;
}

/**
 * Walks the blocks of an open file, reading only their headers (a file of any size, in one pass),
 * to find where the complete ones end. A block counts as complete when its trailing length is
 * there and matches.
 */
export function scanPcapng(fd: number): PcapngScan {
  const size = fstatSync(fd).size;
  const CHUNK = 1 << 20;
  const chunk = Buffer.alloc(CHUNK);
  let chunkAt = 0,
    chunkLen = 0;
  /** the bytes [at, at + n) of the file, n <= 64 KB, or undefined past its end */
  const bytes = (at: number, n: number): Buffer | undefined => {
    if (at + n > size) return undefined;
    if (at < chunkAt || at + n > chunkAt + chunkLen) {
      chunkAt = at;
      chunkLen = readSync(fd, chunk, 0, Math.min(CHUNK, size - at), at);
      if (at + n > chunkAt + chunkLen) return undefined;
    }
    return chunk.subarray(at - chunkAt, at - chunkAt + n);
  };
  const out: PcapngScan = { end: 0, packets: 0, bytes: 0 };
  const head = bytes(0, 28);
  if (!head || head.readUInt32LE(0) !== BLOCK_SHB || head.readUInt32LE(8) !== BYTE_ORDER_MAGIC) return out;
  for (let off = 0; ; ) {
    const h = bytes(off, 28) ?? bytes(off, 12);
    if (!h) break;
    const type = h.readUInt32LE(0),
      total = h.readUInt32LE(4);
    if (total < 12 || total % 4 || off + total > size) break;
    if (type === BLOCK_SHB && h.readUInt32LE(8) !== BYTE_ORDER_MAGIC) break;
    const tail = bytes(off + total - 4, 4);
    if (!tail || tail.readUInt32LE(0) !== total) break;
    if (off === 0) {
      const shb = total <= 65536 ? bytes(0, total) : undefined;
      try {
        out.firstComments = shb ? comments(readOptions(shb, 24, total - 4, 'the first section header')) : [];
      } catch {
        out.firstComments = [];
      }
    }
    if (type === BLOCK_EPB) {
      if (h.length < 28) break;
      out.packets++;
      out.bytes += h.readUInt32LE(20);
    }
    off += total;
    out.end = off;
  }
  return out;
}
