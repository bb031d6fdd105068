// DSCP code points by name (RFC 2474, 2597, 3246, 5865, 8622) and parsing of "name or 0-63".
import { ItmError } from './errors.js';

const names: Record<string, number> = { be: 0, df: 0, ef: 46, va: 44, le: 1 };
for (let i = 0; i < 8; i++) names[`cs${i}`] = i * 8;
for (let x = 1; x <= 4; x++) for (let y = 1; y <= 3; y++) names[`af${x}${y}`] = x * 8 + y * 2;

export function parseDscp(v: string | number, what = 'dscp'): number {
  const s = String(v).trim().toLowerCase();
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n <= 63) return n;
  } else if (/^0x[0-9a-f]+$/.test(s)) {
    const n = Number(s);
    if (n <= 63) return n;
  } else if (Object.hasOwn(names, s)) {
    return names[s]!;
  }
  throw new ItmError(`invalid ${what} '${v}': use 0-63 or a name (${Object.keys(names).join(', ')})`);
}

export function dscpName(n: number): string {
  const hit = Object.entries(names).find(([k, v]) => v === n && k !== 'df');
  return hit ? `${hit[0]} (${n})` : String(n);
}
