// SipHash-2-4 (Aumasson and Bernstein), the overlay's authentication tag. The kernel computes the
// same function in route.bpf.c; test/route.test.ts checks the two against each other and against
// the reference vectors. The user data path tags every packet with it, so it is written for speed:
// 64-bit words as pairs of 32-bit locals (no BigInt, no allocation).

/** A 16-byte key as the four 32-bit halves of k0 and k1 (little-endian). */
export type SipKey = Uint32Array;

export function sipKey(key: Uint8Array): SipKey {
  if (key.length !== 16) throw new Error('siphash24: the key is 16 bytes');
  const k = Buffer.from(key.buffer, key.byteOffset, 16);
  return Uint32Array.of(k.readUInt32LE(0), k.readUInt32LE(4), k.readUInt32LE(8), k.readUInt32LE(12));
}

/** The tag of the last sipRange, as two 32-bit halves (low, high). */
export const sipOut = new Uint32Array(2);

/** SipHash-2-4 of d[start, end) under `k`, into sipOut. */
export function sipRange(k: SipKey, d: Uint8Array, start: number, end: number): void {
  const k0l = k[0]!,
    k0h = k[1]!,
    k1l = k[2]!,
    k1h = k[3]!;
  // "somepseudorandomlygeneratedbytes"
  let v0l = (k0l ^ 0x70736575) >>> 0,
    v0h = (k0h ^ 0x736f6d65) >>> 0;
  let v1l = (k1l ^ 0x6e646f6d) >>> 0,
    v1h = (k1h ^ 0x646f7261) >>> 0;
  let v2l = (k0l ^ 0x6e657261) >>> 0,
    v2h = (k0h ^ 0x6c796765) >>> 0;
  let v3l = (k1l ^ 0x79746573) >>> 0,
    v3h = (k1h ^ 0x74656462) >>> 0;
  const len = end - start,
    whole = start + (len & ~7);
  let t = 0;
  // one step per 8-byte word, then the last word (the tail bytes and the length), then the
  // finalization: 2 rounds a word, 4 at the end
  for (let at = start; ; at += 8) {
    let ml = 0,
      mh = 0,
      rounds = 2;
    if (at < whole) {
      ml = (d[at]! | (d[at + 1]! << 8) | (d[at + 2]! << 16) | (d[at + 3]! << 24)) >>> 0;
      mh = (d[at + 4]! | (d[at + 5]! << 8) | (d[at + 6]! << 16) | (d[at + 7]! << 24)) >>> 0;
    } else if (at === whole) {
      for (let i = 0; i < end - at; i++) {
        if (i < 4) ml |= d[at + i]! << (8 * i);
        else mh |= d[at + i]! << (8 * (i - 4));
      }
      ml >>>= 0;
      mh = (mh | ((len & 0xff) << 24)) >>> 0;
    } else {
      v2l = (v2l ^ 0xff) >>> 0;
      rounds = 4;
    }
    const fin = at > whole;
    if (!fin) {
      v3l = (v3l ^ ml) >>> 0;
      v3h = (v3h ^ mh) >>> 0;
    }
    for (let r = 0; r < rounds; r++) {
      // v0 += v1; v1 <<<= 13; v1 ^= v0; v0 <<<= 32
      t = (v0l + v1l) >>> 0;
      v0h = (v0h + v1h + (t < v0l ? 1 : 0)) >>> 0;
      v0l = t;
      t = ((v1l << 13) | (v1h >>> 19)) >>> 0;
      v1h = ((v1h << 13) | (v1l >>> 19)) >>> 0;
      v1l = t;
      v1l = (v1l ^ v0l) >>> 0;
      v1h = (v1h ^ v0h) >>> 0;
      t = v0l;
      v0l = v0h;
      v0h = t;
      // v2 += v3; v3 <<<= 16; v3 ^= v2
      t = (v2l + v3l) >>> 0;
      v2h = (v2h + v3h + (t < v2l ? 1 : 0)) >>> 0;
      v2l = t;
      t = ((v3l << 16) | (v3h >>> 16)) >>> 0;
      v3h = ((v3h << 16) | (v3l >>> 16)) >>> 0;
      v3l = t;
      v3l = (v3l ^ v2l) >>> 0;
      v3h = (v3h ^ v2h) >>> 0;
      // v0 += v3; v3 <<<= 21; v3 ^= v0
      t = (v0l + v3l) >>> 0;
      v0h = (v0h + v3h + (t < v0l ? 1 : 0)) >>> 0;
      v0l = t;
      t = ((v3l << 21) | (v3h >>> 11)) >>> 0;
      v3h = ((v3h << 21) | (v3l >>> 11)) >>> 0;
      v3l = t;
      v3l = (v3l ^ v0l) >>> 0;
      v3h = (v3h ^ v0h) >>> 0;
      // v2 += v1; v1 <<<= 17; v1 ^= v2; v2 <<<= 32
      t = (v2l + v1l) >>> 0;
      v2h = (v2h + v1h + (t < v2l ? 1 : 0)) >>> 0;
      v2l = t;
      t = ((v1l << 17) | (v1h >>> 15)) >>> 0;
      v1h = ((v1h << 17) | (v1l >>> 15)) >>> 0;
      v1l = t;
      v1l = (v1l ^ v2l) >>> 0;
      v1h = (v1h ^ v2h) >>> 0;
      t = v2l;
      v2l = v2h;
      v2h = t;
    }
    if (fin) break;
    v0l = (v0l ^ ml) >>> 0;
    v0h = (v0h ^ mh) >>> 0;
  }
  sipOut[0] = (v0l ^ v1l ^ v2l ^ v3l) >>> 0;
  sipOut[1] = (v0h ^ v1h ^ v2h ^ v3h) >>> 0;
}

/** SipHash-2-4 of `data` under a 16-byte key; the 8 bytes of the tag, little-endian as the
 * reference implementation writes them. */
export function siphash24(key: Uint8Array, data: Uint8Array): Buffer {
  sipRange(sipKey(key), data, 0, data.length);
  const out = Buffer.alloc(8);
  out.writeUInt32LE(sipOut[0]!, 0);
  out.writeUInt32LE(sipOut[1]!, 4);
  return out;
}
