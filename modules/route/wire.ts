// The overlay header (struct route_hdr in route.bpf.c) as TypeScript writes and reads it: the
// control plane's probes and answers, and the user-space data path. Its layout comes from the
// generated route.abi.ts; integers on the wire are big-endian.
import { ROUTE_ACK, ROUTE_DATA, ROUTE_F_CTL, ROUTE_PROBE, ROUTE_VERSION, route_hdr } from './route.abi.js';
import { sipOut } from './siphash.js';
import { MAX_INNER, tagInto as tagOfInto, type TagKey } from './tag.js';

export const HDR_LEN = route_hdr.size;
/** 2 has the NH-SipHash tag (tag.ts) */
export const VERSION = ROUTE_VERSION;
export const Type = { Data: ROUTE_DATA, Probe: ROUTE_PROBE, Ack: ROUTE_ACK } as const;
export type Type = (typeof Type)[keyof typeof Type];
/** the sequence number is the control plane's (its own replay window at the receiver) */
export const F_CTL = ROUTE_F_CTL;

const off = (f: string) => route_hdr.fields.find((x) => x.name === f)!.offset;
/** where the header's fields are */
export const FIELD = {
  version: off('version'),
  type: off('type'),
  flags: off('flags'),
  keyId: off('key_id'),
  from: off('from'),
  origin: off('origin'),
  to: off('to'),
  seq: off('seq'),
  tag: off('tag'),
};

export interface Header {
  type: Type;
  flags: number;
  keyId: number;
  from: number;
  origin: number;
  to: number;
  seq: bigint;
}

/** The header of `pkt` (from the overlay header on), or undefined if it is too short or not
 * of this version. */
export function readHeader(pkt: Buffer): Header | undefined {
  if (pkt.length < HDR_LEN || pkt[FIELD.version] !== VERSION) return undefined;
  return {
    type: pkt[FIELD.type] as Type,
    flags: pkt[FIELD.flags]!,
    keyId: pkt[FIELD.keyId]!,
    from: pkt.readUInt32BE(FIELD.from),
    origin: pkt.readUInt32BE(FIELD.origin),
    to: pkt.readUInt32BE(FIELD.to),
    seq: pkt.readBigUInt64BE(FIELD.seq),
  };
}

/** Writes `h` at the start of `pkt` (which holds the payload after HDR_LEN) and tags the whole
 * under `key`, leaving out the 2 bytes at `csumAt` (an inner L4 checksum) if given. */
export function seal(pkt: Buffer, h: Header, key: TagKey, csumAt?: number): Buffer {
  pkt[FIELD.version] = VERSION;
  pkt[FIELD.type] = h.type;
  pkt[FIELD.flags] = h.flags;
  pkt[FIELD.keyId] = h.keyId;
  pkt.writeUInt32BE(h.from >>> 0, FIELD.from);
  pkt.writeUInt32BE(h.origin >>> 0, FIELD.origin);
  pkt.writeUInt32BE(h.to >>> 0, FIELD.to);
  pkt.writeBigUInt64BE(h.seq, FIELD.seq);
  tagInto(pkt, key, csumAt);
  writeTag(pkt);
  return pkt;
}

/** The tag `pkt` should carry under `key` (the checksum at `csumAt` read as zero), into sipOut,
 * without allocating: the user data path's, for every packet. */
export function tagInto(pkt: Buffer, key: TagKey, csumAt?: number): void {
  tagOfInto(pkt, key, csumAt);
}

/** The same, as the 8 bytes the header carries. */
export function tagOf(pkt: Buffer, key: TagKey, csumAt?: number): Buffer {
  tagInto(pkt, key, csumAt);
  const out = Buffer.alloc(8);
  out.writeUInt32LE(sipOut[0]!, 0);
  out.writeUInt32LE(sipOut[1]!, 4);
  return out;
}

/** Writes the tag tagInto computed last into the header of `pkt`. */
export function writeTag(pkt: Buffer): void {
  pkt.writeUInt32LE(sipOut[0]!, FIELD.tag);
  pkt.writeUInt32LE(sipOut[1]!, FIELD.tag + 4);
}

/** Whether the header of `pkt` carries the tag tagInto computed last. */
export function tagMatches(pkt: Buffer): boolean {
  return pkt.readUInt32LE(FIELD.tag) === sipOut[0] && pkt.readUInt32LE(FIELD.tag + 4) === sipOut[1];
}

/** Whether `pkt` carries the right tag under `key`. */
export function tagOk(pkt: Buffer, key: TagKey, csumAt?: number): boolean {
  if (pkt.length < HDR_LEN || pkt.length - HDR_LEN > MAX_INNER) return false;
  tagInto(pkt, key, csumAt);
  return tagMatches(pkt);
}
