// IPv4/IPv6 addresses and prefixes as 16-byte IPv6 (IPv4-mapped), the form the kernel side keys on.
import { isIPv4, isIPv6 } from 'node:net';

export interface Prefix {
  family: 4 | 6;
  addr: Buffer; // 16 bytes, IPv4-mapped for family 4
  len: number; // in the family's own terms (0-32 or 0-128)
  text: string;
}

export function addrToBytes(s: string): { family: 4 | 6; addr: Buffer } | undefined {
  // a zone (fe80::1%eth0) means nothing to a prefix match: refuse it rather than drop it
  if (s.includes('%')) return undefined;
  if (isIPv4(s)) {
    const b = Buffer.alloc(16);
    b[10] = 0xff;
    b[11] = 0xff;
    s.split('.').forEach((o, i) => {
      b[12 + i] = Number(o);
    });
    return { family: 4, addr: b };
  }
  if (isIPv6(s)) {
    let str = s;
    // an embedded dotted quad at the end (::ffff:1.2.3.4)
    const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(str);
    if (m) {
      const q = m[2]!.split('.').map(Number);
      str = `${m[1]}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
    }
    const [head, tail] = str.includes('::') ? str.split('::') : [str, undefined];
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => {
      b.writeUInt16BE(parseInt(g, 16), i * 2);
    });
    return { family: 6, addr: b };
  }
  return undefined;
}

/** The text form; an IPv4-mapped address reads as IPv4 unless `family` says it is IPv6. */
export function bytesToAddr(b: Buffer, family?: 4 | 6): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    const quad = `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
    return family === 6 ? `::ffff:${quad}` : quad;
  }
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  // the longest run of zero groups becomes ::
  let best = -1,
    bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return g.join(':');
  return `${g.slice(0, best).join(':')}::${g.slice(best + bestLen).join(':')}`;
}

/** "10.0.0.0/8", "fd00::/64", or a bare address (a host prefix); a string says what is wrong. */
export function parsePrefix(s: string): Prefix | string {
  const [a, l, extra] = s.split('/');
  if (extra !== undefined || !a) return `'${s}' is not an address or prefix`;
  const ab = addrToBytes(a);
  if (!ab) return `'${a}' is not an IPv4 or IPv6 address`;
  const max = ab.family === 4 ? 32 : 128;
  let len = max;
  if (l !== undefined) {
    if (!/^\d+$/.test(l) || Number(l) > max) return `prefix length /${l} is out of range for IPv${ab.family} (0-${max})`;
    len = Number(l);
  }
  // clear host bits so that equal prefixes compare equal
  const bits = (ab.family === 4 ? 96 : 0) + len;
  const addr = Buffer.from(ab.addr);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    addr[i] = addr[i]! & ((0xff00 >> keep) & 0xff);
  }
  return { family: ab.family, addr, len, text: `${bytesToAddr(addr, ab.family)}/${len}` };
}
