// The kernel ABI for the control plane: the generated constants and layouts, registered with the
// codec. Import from here, not from src/gen directly.
import { registerLayouts } from './abi-codec.js';
import * as gen from './gen/abi.js';

registerLayouts(gen.layouts);
export * from './gen/abi.js';
export { decode, encode, sumPerCpu } from './abi-codec.js';
export type { StructLayout } from './abi-codec.js';

/** A u32 map key or value (little-endian, as the kernel has it on x86). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
