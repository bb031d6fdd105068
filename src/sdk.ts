// The TypeScript SDK for module authors: everything a module's TypeScript needs, from one place,
// as bpf/include/itm/itm.h is for its C. A module imports from here, not from itm's internals.
import type { CommandModule } from 'yargs';
import type { GlobalArgs } from './cli/common.js';
export {
  defineModule,
  HOOKS,
  type FlowRow,
  type Hook,
  type InitContext,
  type KernelConfig,
  type KernelModuleDef,
  type KernelSide,
  type ModuleDef,
  type ParamSpec,
  type ParamValue,
  type Periodic,
  type PeriodicContext,
  type UserDatapath,
  type UserModuleDef,
  type UserContext,
  type UserFunctions,
  type Verdict,
} from './module-def.js';
export { ItmError } from './errors.js';
// the structures a module shares with its C: decode and encode them by the layouts its
// generated <module>.abi.ts has (registerLayouts), and the dispatcher's own (itm_flow)
export { decode, encode, registerLayouts, sumPerCpu, type StructLayout } from './abi-codec.js';
export { itm_flow, type ItmFlow } from './abi.js';
// maps (a module's periodic functions and user data path get them by ctx.open), and the
// atomics on mmapped map memory; devices and routes over netlink (no `ip` process)
export {
  BpfError,
  atomicAddU64,
  atomicRaiseU64,
  link,
  lockFile,
  route,
  type BpfMap,
  type LinkInfo,
  type RouteInfo,
} from './libbpf/index.js';
// packets in user space
export { PacketView, type Room } from './user/packet.js';
export { EPB_INBOUND, EPB_OUTBOUND, PcapngWriter, scanPcapng } from './user/pcapng.js';
export { foldSum, onesSum } from './net/checksum.js';
// what a module's parameters and reports name: addresses and prefixes, DSCPs, protocols
export { bytesToAddr, parsePrefix, type Prefix } from './netaddr.js';
export { dscpName, parseDscp } from './dscp.js';
export { protoName } from './interest.js';
// a module's configuration files, read with every error naming its line
export { type Fields, YamlReader } from './yaml-reader.js';
// a module's own itmctl commands (its cli.ts, see modules/README.md): the command type, the root
// check and output helpers every itmctl command uses, and the loaded instance a command reports on
export type { GlobalArgs as CliArgs } from './cli/common.js';
export { printJson, requireRoot, table } from './cli/common.js';
/** One itmctl command of a module: a yargs command over itmctl's global options (--json, --verbose). */
export type CliCommand<A extends GlobalArgs = GlobalArgs> = CommandModule<GlobalArgs, A>;
export type LoadedInstance = ReturnType<typeof import('./registry/index.js').nodeInstance>;
/** The kernel instance loaded under `name` in this network namespace (its first, when it is on
 * several devices and hooks): where it is, its parameters, and its pinned maps (`instance.open`);
 * close `instance` when done. The registry is imported here, when a command asks. */
export async function loadedInstance(name: string): Promise<LoadedInstance> {
  const { nodeInstance } = await import('./registry/index.js');
  return nodeInstance(name);
}
