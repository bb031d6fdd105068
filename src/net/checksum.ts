// Internet checksums (RFC 1071), shared by the user-module packet helpers and the test harness.

/** One's-complement sum of 16-bit big-endian words of buf[from, to), unfolded (add more, then foldSum). */
export function onesSum(buf: Uint8Array, acc = 0, from = 0, to = buf.length): number {
  const end = from + ((to - from) & ~1);
  for (let i = from; i < end; i += 2) acc += (buf[i]! << 8) | buf[i + 1]!;
  if ((to - from) & 1) acc += buf[to - 1]! << 8;
  // keep the accumulator well inside the safe integer range for very long inputs
  return acc > 0xffffffff ? acc % 0xffff || 0xffff : acc;
}

export function foldSum(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return acc;
}

/** The checksum of the concatenated parts (each but the last should have even length). */
export function internetChecksum(...parts: Uint8Array[]): number {
  let acc = 0;
  parts.forEach((p, i) => {
    if (p.length & 1 && i < parts.length - 1) throw new Error('internetChecksum: odd-length part before the last');
    acc = onesSum(p, acc);
  });
  return ~foldSum(acc) & 0xffff;
}
