// SipHash-2-4 (Aumasson and Bernstein), the overlay's authentication tag, on 32-bit halves so it
// needs no BigInt on the per-packet path. The kernel side computes the same function in
// route.bpf.c; test/route.test.ts checks the two against each other and the reference vectors.

const st = new Uint32Array(8); // v0..v3 as (lo, hi) pairs: v0 = st[0], st[1]; v1 = st[2], st[3]...

function add(a: number, b: number): void {
  const lo = (st[a]! + st[b]!) >>> 0;
  st[a + 1] = (st[a + 1]! + st[b + 1]! + (lo < st[a]! ? 1 : 0)) >>> 0;
  st[a] = lo;
}

function rotl(a: number, n: number): void {
  let lo = st[a]!, hi = st[a + 1]!;
  if (n >= 32) { const t = lo; lo = hi; hi = t; n -= 32; }
  if (n) {
    const l = ((lo << n) | (hi >>> (32 - n))) >>> 0;
    hi = ((hi << n) | (lo >>> (32 - n))) >>> 0;
    lo = l;
  }
  st[a] = lo;
  st[a + 1] = hi;
}

function xor(a: number, b: number): void {
  st[a] = (st[a]! ^ st[b]!) >>> 0;
  st[a + 1] = (st[a + 1]! ^ st[b + 1]!) >>> 0;
}

const V0 = 0, V1 = 2, V2 = 4, V3 = 6;

function round(): void {
  add(V0, V1); rotl(V1, 13); xor(V1, V0); rotl(V0, 32);
  add(V2, V3); rotl(V3, 16); xor(V3, V2);
  add(V0, V3); rotl(V3, 21); xor(V3, V0);
  add(V2, V1); rotl(V1, 17); xor(V1, V2); rotl(V2, 32);
}

function absorb(lo: number, hi: number): void {
  st[V3] = (st[V3]! ^ lo) >>> 0; st[V3 + 1] = (st[V3 + 1]! ^ hi) >>> 0;
  round(); round();
  st[V0] = (st[V0]! ^ lo) >>> 0; st[V0 + 1] = (st[V0 + 1]! ^ hi) >>> 0;
}

/** SipHash-2-4 of `data` under a 16-byte key; the 8 bytes of the tag, little-endian as the
 * reference implementation writes them. */
export function siphash24(key: Uint8Array, data: Uint8Array): Buffer {
  if (key.length !== 16) throw new Error('siphash24: the key is 16 bytes');
  const k = Buffer.from(key.buffer, key.byteOffset, 16);
  const d = Buffer.from(data.buffer, data.byteOffset, data.length);
  const k0lo = k.readUInt32LE(0), k0hi = k.readUInt32LE(4), k1lo = k.readUInt32LE(8), k1hi = k.readUInt32LE(12);
  // "somepseudorandomlygeneratedbytes"
  st[0] = (k0lo ^ 0x70736575) >>> 0; st[1] = (k0hi ^ 0x736f6d65) >>> 0;
  st[2] = (k1lo ^ 0x6e646f6d) >>> 0; st[3] = (k1hi ^ 0x646f7261) >>> 0;
  st[4] = (k0lo ^ 0x6e657261) >>> 0; st[5] = (k0hi ^ 0x6c796765) >>> 0;
  st[6] = (k1lo ^ 0x79746573) >>> 0; st[7] = (k1hi ^ 0x74656462) >>> 0;
  const whole = d.length & ~7;
  for (let i = 0; i < whole; i += 8) absorb(d.readUInt32LE(i), d.readUInt32LE(i + 4));
  const last = Buffer.alloc(8);
  d.copy(last, 0, whole);
  last[7] = d.length & 0xff;
  absorb(last.readUInt32LE(0), last.readUInt32LE(4));
  st[V2] = (st[V2]! ^ 0xff) >>> 0;
  round(); round(); round(); round();
  const out = Buffer.alloc(8);
  out.writeUInt32LE((st[0]! ^ st[2]! ^ st[4]! ^ st[6]!) >>> 0, 0);
  out.writeUInt32LE((st[1]! ^ st[3]! ^ st[5]! ^ st[7]!) >>> 0, 4);
  return out;
}
