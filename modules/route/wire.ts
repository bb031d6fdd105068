// The overlay header (struct route_hdr in route.bpf.c) as TypeScript writes and reads it: the
// control plane's probes and answers, and the user-space data path. Its layout comes from the
// generated route.abi.ts; integers on the wire are big-endian.
import { route_hdr } from './route.abi.js';
import { siphash24 } from './siphash.js';

export const HDR_LEN = route_hdr.size;
export const VERSION = 1;
export const Type = { Data: 1, Probe: 2, Ack: 3 } as const;
export type Type = (typeof Type)[keyof typeof Type];
/** the sequence number is the control plane's (its own replay window at the receiver) */
export const F_CTL = 1;

const off = (f: string) => route_hdr.fields.find((x) => x.name === f)!.offset;
const O = { version: off('version'), type: off('type'), flags: off('flags'), keyId: off('key_id'), from: off('from'), origin: off('origin'), to: off('to'), seq: off('seq'), tag: off('tag') };

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
 * version 1. */
export function readHeader(pkt: Buffer): Header | undefined {
  if (pkt.length < HDR_LEN || pkt[O.version] !== VERSION) return undefined;
  return {
    type: pkt[O.type] as Type, flags: pkt[O.flags]!, keyId: pkt[O.keyId]!,
    from: pkt.readUInt32BE(O.from), origin: pkt.readUInt32BE(O.origin), to: pkt.readUInt32BE(O.to), seq: pkt.readBigUInt64BE(O.seq),
  };
}

/** Writes `h` at the start of `pkt` (which holds the payload after HDR_LEN) and tags the whole
 * under `key`, leaving out the 2 bytes at `csumAt` (an inner L4 checksum) if given. */
export function seal(pkt: Buffer, h: Header, key: Buffer, csumAt?: number): Buffer {
  pkt[O.version] = VERSION;
  pkt[O.type] = h.type;
  pkt[O.flags] = h.flags;
  pkt[O.keyId] = h.keyId;
  pkt.writeUInt32BE(h.from >>> 0, O.from);
  pkt.writeUInt32BE(h.origin >>> 0, O.origin);
  pkt.writeUInt32BE(h.to >>> 0, O.to);
  pkt.writeBigUInt64BE(h.seq, O.seq);
  tagOf(pkt, key, csumAt).copy(pkt, O.tag);
  return pkt;
}

/** The tag `pkt` should carry: SipHash-2-4 over it with the tag field (and the checksum at
 * `csumAt`) read as zero. */
export function tagOf(pkt: Buffer, key: Buffer, csumAt?: number): Buffer {
  const saved = Buffer.from(pkt.subarray(O.tag, O.tag + 8));
  const savedCsum = csumAt !== undefined && csumAt + 2 <= pkt.length ? Buffer.from(pkt.subarray(csumAt, csumAt + 2)) : undefined;
  pkt.fill(0, O.tag, O.tag + 8);
  if (savedCsum) pkt.fill(0, csumAt, csumAt! + 2);
  try {
    return siphash24(key, pkt);
  } finally {
    saved.copy(pkt, O.tag);
    if (savedCsum) savedCsum.copy(pkt, csumAt);
  }
}

/** Whether `pkt` carries the right tag under `key`. */
export function tagOk(pkt: Buffer, key: Buffer, csumAt?: number): boolean {
  return pkt.length >= HDR_LEN && tagOf(pkt, key, csumAt).equals(pkt.subarray(O.tag, O.tag + 8));
}
