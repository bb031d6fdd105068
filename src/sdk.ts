// The TypeScript SDK for module authors: everything a module's TypeScript needs, from one place,
// as bpf/include/itm/itm.h is for its C. A module imports from here, not from itm's internals.
export {
  defineModule, HOOKS,
  type FlowRow, type Hook, type KernelConfig, type ModuleDef, type ParamSpec, type ParamValue, type PeriodicContext,
  type UserContext, type UserFunctions, type Verdict,
} from './module-def.js';
export { ItmError } from './errors.js';
// the structures a module shares with its C: decode and encode them by the layouts its
// generated <module>.abi.ts has (registerLayouts), and the dispatcher's own (itm_flow)
export { decode, encode, registerLayouts, sumPerCpu, type StructLayout } from './abi-codec.js';
export { itm_flow, type ItmFlow } from './abi.js';
// maps (a module's periodic functions and user data path get them by ctx.open), and the
// atomics on mmapped map memory
export { BpfError, atomicAddU64, atomicRaiseU64, lockFile, type BpfMap } from './libbpf/index.js';
// packets in user space
export { PacketView, type Room } from './user/packet.js';
export { EPB_INBOUND, EPB_OUTBOUND, PcapngWriter, scanPcapng } from './user/pcapng.js';
export { foldSum, onesSum } from './net/checksum.js';
// what a module's parameters and reports name: addresses and prefixes, DSCPs, protocols
export { bytesToAddr, parsePrefix, type Prefix } from './netaddr.js';
export { dscpName, parseDscp } from './dscp.js';
export { protoName } from './interest.js';
