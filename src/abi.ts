// The kernel ABI for the control plane: the generated constants and layouts, registered with the
// codec. Import from here, not from src/gen directly.
import { registerLayouts, sumPerCpu, type StructLayout } from './abi-codec.js';
import * as gen from './gen/abi.js';

registerLayouts(gen.layouts);
export * from './gen/abi.js';
export { decode, encode, sumPerCpu } from './abi-codec.js';
export type { StructLayout } from './abi-codec.js';

/** Where the field `name` of `layout` starts, in bytes. */
export function offsetOf(layout: StructLayout, name: string): number {
  const f = layout.fields.find((x) => x.name === name);
  if (!f) throw new TypeError(`struct ${layout.name} has no field ${name}`);
  return f.offset;
}

/** The hook's counters (struct itm_dstats), summed over CPUs, from its itm_percpu map. */
export function sumDstats(percpu: { lookup(key: Buffer): Buffer | undefined; valueSize: number }): gen.ItmDstats {
  return sumPerCpu<gen.ItmDstats>(gen.itm_dstats, percpu, u32(0), offsetOf(gen.itm_percpu, 'dstats'));
}

/** A u32 map key or value (little-endian, as the kernel has it on x86). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
