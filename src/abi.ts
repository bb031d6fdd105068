// The kernel ABI for the control plane: the generated constants and layouts, registered with the
// codec. Import from here, not from src/gen directly.
import { registerLayouts } from './abi-codec.js';
import * as gen from './gen/abi.js';

registerLayouts(gen.layouts);
export * from './gen/abi.js';
export { decode, encode } from './abi-codec.js';
export type { StructLayout } from './abi-codec.js';
