// Classic pcap files (what `tcpdump -w` writes): a reader for captures and a writer so that built
// packets can be handed to tcpdump/wireshark when a test needs a second opinion.
import { readFile } from 'node:fs/promises';
import { parsePacket, type LinkType, type ParsedPacket } from './packet.js';

export const LINKTYPE = { ETHERNET: 1, RAW: 101, LINUX_SLL: 113, LINUX_SLL2: 276 } as const;

export interface PcapRecord {
  /** Capture time, µs since the epoch. */
  tsUs: number;
  /** Length on the wire. */
  origLen: number;
  /** The captured bytes (at most the snap length). */
  data: Buffer;
}

export interface Pcap {
  linkType: number;
  snaplen: number;
  records: PcapRecord[];
}

/** Parse a classic pcap file (µs or ns timestamps, either byte order). A record cut short at the
 *  end of the file (the writer was killed mid-write) is dropped. */
export function readPcap(buf: Buffer): Pcap {
  if (buf.length < 24) throw new Error(`pcap: file too short (${buf.length} bytes)`);
  const magicLE = buf.readUInt32LE(0);
  let le: boolean, nano: boolean;
  if (magicLE === 0xa1b2c3d4) {
    le = true;
    nano = false;
  } else if (magicLE === 0xa1b23c4d) {
    le = true;
    nano = true;
  } else if (buf.readUInt32BE(0) === 0xa1b2c3d4) {
    le = false;
    nano = false;
  } else if (buf.readUInt32BE(0) === 0xa1b23c4d) {
    le = false;
    nano = true;
  } else throw new Error(`pcap: unknown magic 0x${magicLE.toString(16)} (pcapng is not supported)`);
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const snaplen = u32(16);
  const linkType = u32(20) & 0x0fffffff;
  const records: PcapRecord[] = [];
  for (let o = 24; o + 16 <= buf.length; ) {
    const sec = u32(o),
      frac = u32(o + 4),
      incl = u32(o + 8),
      orig = u32(o + 12);
    if (o + 16 + incl > buf.length) break;
    records.push({ tsUs: sec * 1e6 + (nano ? Math.floor(frac / 1000) : frac), origLen: orig, data: buf.subarray(o + 16, o + 16 + incl) });
    o += 16 + incl;
  }
  return { linkType, snaplen, records };
}

export function linkTypeName(linkType: number): LinkType {
  switch (linkType) {
    case LINKTYPE.ETHERNET:
      return 'ethernet';
    case LINKTYPE.RAW:
      return 'raw';
    case LINKTYPE.LINUX_SLL:
      return 'sll';
    case LINKTYPE.LINUX_SLL2:
      return 'sll2';
    default:
      throw new Error(`pcap: link type ${linkType} is not supported`);
  }
}

/** Every record of a pcap buffer, parsed. */
export function parsePcap(buf: Buffer): ParsedPacket[] {
  const pcap = readPcap(buf);
  const linkType = linkTypeName(pcap.linkType);
  return pcap.records.map((r) => parsePacket(r.data, { origLen: r.origLen, linkType, tsUs: r.tsUs }));
}

export async function parsePcapFile(path: string): Promise<ParsedPacket[]> {
  return parsePcap(await readFile(path));
}

/** A pcap file (µs timestamps, little endian) holding `frames`; Ethernet unless told otherwise. */
export function writePcap(
  frames: Array<Buffer | { data: Buffer; tsUs?: number; origLen?: number }>,
  linkType: number = LINKTYPE.ETHERNET,
  snaplen = 262144,
): Buffer {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(snaplen, 16);
  head.writeUInt32LE(linkType, 20);
  const parts: Buffer[] = [head];
  frames.forEach((f, i) => {
    const { data, tsUs = 1_700_000_000_000_000 + i, origLen = data.length } = Buffer.isBuffer(f) ? { data: f } : f;
    const h = Buffer.alloc(16);
    h.writeUInt32LE(Math.floor(tsUs / 1e6), 0);
    h.writeUInt32LE(tsUs % 1e6, 4);
    h.writeUInt32LE(data.length, 8);
    h.writeUInt32LE(origLen, 12);
    parts.push(h, data);
  });
  return Buffer.concat(parts);
}
