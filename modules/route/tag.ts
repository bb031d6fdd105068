// The overlay's tag (route_tag in route.bpf.c, which has the why): NH, UMAC's universal hash
// (RFC 4418 §5.2.2), twice with its Toeplitz shift, over the inner packet, then SipHash-2-4 of the
// header's first 24 bytes, the inner length and the two NH sums. The keys of both steps come from
// the pair's 16-byte key, by SipHash-2-4 of a counter in a domain of its own. The kernel computes
// the same; test/route.test.ts checks the two against each other, and this NH against a plain
// BigInt one. Written for speed: 32-bit words, no BigInt, no allocation per packet.
import * as abi from './route.abi.js';
import { sipKey, sipOut, sipRange, type SipKey } from './siphash.js';

/** the overlay header's length: the tag covers its first 24 bytes directly, and what follows it
 * through NH */
const HDR = abi.ROUTE_HDR_LEN;
const HDR_SIGNED = abi.route_hdr.fields.find((f) => f.name === 'tag')!.offset;
/** NH's key words: one per word of the longest inner packet, and 4 more for the Toeplitz shift of
 * the second pass */
export const NH_WORDS = abi.ROUTE_NH_WORDS;
/** the longest inner packet a tag covers */
export const MAX_INNER = abi.ROUTE_MAX_INNER;

/** SipHash's input counter for key word pair j of NH, and for the two halves of the PRF's key */
const NH_DOMAIN = 0x6e68000000000000n; // "nh"
const PRF_DOMAIN = 0x7072660000000000n; // "prf"

if (new Uint8Array(Uint32Array.of(1).buffer)[0] !== 1) throw new Error('route: the tag reads little-endian words; this host is big-endian');

/** A pair's tag keys. */
export interface TagKey {
  prf: SipKey;
  nh: Uint32Array;
}

export function tagKey(key: Uint8Array): TagKey {
  const k = sipKey(key);
  const ctr = Buffer.alloc(8);
  const word = (n: bigint): [number, number] => {
    ctr.writeBigUInt64LE(n);
    sipRange(k, ctr, 0, 8);
    return [sipOut[0]!, sipOut[1]!];
  };
  const nh = new Uint32Array(NH_WORDS);
  for (let j = 0; j < NH_WORDS / 2; j++) [nh[2 * j], nh[2 * j + 1]] = word(NH_DOMAIN | BigInt(j));
  const [a, b] = word(PRF_DOMAIN),
    [c, d] = word(PRF_DOMAIN | 1n);
  return { prf: Uint32Array.of(a, b, c, d), nh };
}

/** The pair's entry in route_keys. */
export function keyEntry(t: TagKey): Buffer {
  const b = Buffer.alloc(abi.route_key.size);
  const prfAt = abi.route_key.fields.find((f) => f.name === 'prf')!.offset;
  const nhAt = abi.route_key.fields.find((f) => f.name === 'nh')!.offset;
  t.prf.forEach((w, i) => {
    b.writeUInt32LE(w, prfAt + 4 * i);
  });
  t.nh.forEach((w, i) => {
    b.writeUInt32LE(w, nhAt + 4 * i);
  });
  return b;
}

// the inner packet, zero-padded, as words; the PRF's input
const inner = new Uint32Array(NH_WORDS);
const innerBytes = new Uint8Array(inner.buffer);
const prfIn = Buffer.alloc(48);
/** the two NH sums of the last nh(), as 32-bit halves: low and high of the first, of the second */
export const nhOut = new Uint32Array(4);
const TWO32 = 4294967296;

/** NH's two passes over words [0, words) of `inner` with `k`, into nhOut. */
function nh(k: Uint32Array, words: number): void {
  let l1 = 0,
    h1 = 0,
    l2 = 0,
    h2 = 0;
  for (let i = 0; i < words; i += 2) {
    const m0 = inner[i]!,
      m1 = inner[i + 1]!;
    // (a * b) mod 2^64 for 32-bit a and b, as a * low16(b) + a * high16(b) * 2^16: both exact
    // in a double; their halves summed apart, the carries settled once at the end
    let a = (m0 + k[i]!) >>> 0,
      b = (m1 + k[i + 1]!) >>> 0;
    let p = a * (b & 0xffff),
      q = a * (b >>> 16);
    l1 += (p >>> 0) + (q & 0xffff) * 65536;
    h1 += Math.floor(p / TWO32) + Math.floor(q / 65536);
    a = (m0 + k[i + 4]!) >>> 0;
    b = (m1 + k[i + 5]!) >>> 0;
    p = a * (b & 0xffff);
    q = a * (b >>> 16);
    l2 += (p >>> 0) + (q & 0xffff) * 65536;
    h2 += Math.floor(p / TWO32) + Math.floor(q / 65536);
  }
  nhOut[0] = l1 >>> 0;
  nhOut[1] = (h1 + Math.floor(l1 / TWO32)) >>> 0;
  nhOut[2] = l2 >>> 0;
  nhOut[3] = (h2 + Math.floor(l2 / TWO32)) >>> 0;
}

/**
 * The tag of `pkt` (from the overlay header to its end) under `key`, into sipOut: the two bytes
 * at `csumAt` (an inner L4 checksum, which offloads may fill in later) read as zero. Throws for an
 * inner packet longer than a tag covers.
 */
export function tagInto(pkt: Uint8Array, key: TagKey, csumAt?: number): void {
  const n = pkt.length - HDR;
  if (n < 0 || n > MAX_INNER) throw new RangeError(`route: a tag covers 0 to ${MAX_INNER} bytes after the header, not ${n}`);
  const words = ((n + 7) >> 3) << 1;
  innerBytes.set(pkt.subarray(HDR));
  innerBytes.fill(0, n, words * 4);
  if (csumAt !== undefined && csumAt >= HDR && csumAt + 2 <= pkt.length) innerBytes.fill(0, csumAt - HDR, csumAt - HDR + 2);
  nh(key.nh, words);
  prfIn.set(pkt.subarray(0, HDR_SIGNED), 0);
  prfIn.writeUInt32LE(n, 24);
  prfIn.writeUInt32LE(0, 28);
  for (let i = 0; i < 4; i++) prfIn.writeUInt32LE(nhOut[i]!, 32 + 4 * i);
  sipRange(key.prf, prfIn, 0, 48);
}

/** NH as RFC 4418 writes it, with BigInt: the reference the tests check nh() against. */
export function nhReference(k: Uint32Array, msg: Uint8Array, shift: number): bigint {
  const padded = new Uint8Array(((msg.length + 7) >> 3) << 3);
  padded.set(msg);
  const dv = new DataView(padded.buffer);
  let sum = 0n;
  for (let i = 0; i < padded.length / 4; i += 2) {
    const a = BigInt((dv.getUint32(4 * i, true) + k[i + shift]!) >>> 0);
    const b = BigInt((dv.getUint32(4 * i + 4, true) + k[i + 1 + shift]!) >>> 0);
    sum = (sum + a * b) & 0xffffffffffffffffn;
  }
  return sum;
}

/** The NH sums tagInto used last, as BigInts (for tests). */
export function lastNh(): [bigint, bigint] {
  return [BigInt(nhOut[0]!) | (BigInt(nhOut[1]!) << 32n), BigInt(nhOut[2]!) | (BigInt(nhOut[3]!) << 32n)];
}
