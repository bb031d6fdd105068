// Encodes and decodes the kernel structures described by the generated layouts (src/gen/abi.ts).
// Integers of 1, 2 and 4 bytes are numbers, of 8 bytes bigints; byte arrays are Buffers.

export interface FieldLayout {
  name: string;
  offset: number;
  kind: 'int' | 'struct';
  size: number;
  struct?: string;
  count?: number;
  elemSize?: number;
}
export interface StructLayout {
  name: string;
  size: number;
  fields: FieldLayout[];
}

let registry: Record<string, StructLayout> = {};
/** Called once by src/gen/abi.ts's consumer (src/abi.ts) with every generated layout. */
export function registerLayouts(layouts: Record<string, StructLayout>): void {
  registry = { ...registry, ...layouts };
}

function layoutOf(name: string): StructLayout {
  const l = registry[name];
  if (!l) throw new Error(`no layout for struct ${name}`);
  return l;
}

function readInt(buf: Buffer, off: number, size: number): number | bigint {
  switch (size) {
    case 1:
      return buf.readUInt8(off);
    case 2:
      return buf.readUInt16LE(off);
    case 4:
      return buf.readUInt32LE(off);
    case 8:
      return buf.readBigUInt64LE(off);
    default:
      throw new Error(`unsupported int size ${size}`);
  }
}

function writeInt(buf: Buffer, off: number, size: number, v: unknown): void {
  switch (size) {
    case 1:
      buf.writeUInt8(Number(v ?? 0), off);
      return;
    case 2:
      buf.writeUInt16LE(Number(v ?? 0), off);
      return;
    case 4:
      buf.writeUInt32LE(Number(v ?? 0) >>> 0, off);
      return;
    case 8:
      buf.writeBigUInt64LE(BigInt((v as bigint | number | undefined) ?? 0), off);
      return;
    default:
      throw new Error(`unsupported int size ${size}`);
  }
}

export function decode<T>(layout: StructLayout, buf: Buffer, base = 0): T {
  const o: Record<string, unknown> = {};
  for (const f of layout.fields) {
    const at = base + f.offset;
    if (f.count === undefined) {
      o[f.name] = f.kind === 'struct' ? decode(layoutOf(f.struct!), buf, at) : readInt(buf, at, f.size);
    } else if (f.kind === 'int' && f.elemSize === 1) {
      o[f.name] = Buffer.from(buf.subarray(at, at + f.count));
    } else {
      const arr: unknown[] = [];
      for (let i = 0; i < f.count; i++) {
        const ea = at + i * f.elemSize!;
        arr.push(f.kind === 'struct' ? decode(layoutOf(f.struct!), buf, ea) : readInt(buf, ea, f.elemSize!));
      }
      o[f.name] = arr;
    }
  }
  return o as T;
}

export function encode(layout: StructLayout, value: object, buf: Buffer = Buffer.alloc(layout.size), base = 0): Buffer {
  const v = value as Record<string, unknown>;
  for (const f of layout.fields) {
    const at = base + f.offset;
    const x = v[f.name];
    if (x === undefined) continue;
    if (f.count === undefined) {
      if (f.kind === 'struct') encode(layoutOf(f.struct!), x as object, buf, at);
      else writeInt(buf, at, f.size, x);
    } else if (f.kind === 'int' && f.elemSize === 1) {
      (x as Buffer).copy(buf, at, 0, f.count);
    } else {
      const arr = x as unknown[];
      if (arr.length > f.count) throw new Error(`${layout.name}.${f.name}: ${arr.length} elements, room for ${f.count}`);
      arr.forEach((e, i) => {
        const ea = at + i * f.elemSize!;
        if (f.kind === 'struct') encode(layoutOf(f.struct!), e as object, buf, ea);
        else writeInt(buf, ea, f.elemSize!, e);
      });
    }
  }
  return buf;
}

/** The sum over CPUs of a per-CPU map's value at `key`, decoded (each CPU's copy is 8-aligned);
 * with `at`, of the structure at that offset in the value. */
export function sumPerCpu<T>(
  layout: StructLayout,
  map: { lookup(key: Buffer): Buffer | undefined; valueSize: number },
  key: Buffer,
  at = 0,
): T {
  const raw = map.lookup(key);
  const stride = Math.ceil(map.valueSize / 8) * 8;
  const total = {} as Record<string, bigint | bigint[]>;
  if (!raw) return total as T;
  for (let off = 0; off + map.valueSize <= raw.length; off += stride) {
    const v = decode<Record<string, bigint | bigint[]>>(layout, raw, off + at);
    for (const [k, x] of Object.entries(v)) {
      if (Array.isArray(x)) total[k] = x.map((e, i) => ((total[k] as bigint[] | undefined)?.[i] ?? 0n) + e);
      else total[k] = ((total[k] as bigint | undefined) ?? 0n) + x;
    }
  }
  return total as T;
}
