// A typed binding to libbpf for Node: objects, programs, maps, tc/XDP attachment, devices. It
// knows nothing of the application built on it.
export { BpfError, NotSupportedError, summarizeLog } from './errors.js';
export type { BpfErrorOptions } from './errors.js';
export { BpfObject, linkObjects } from './object.js';
export type { GlobalInfo } from './object.js';
export { BpfProgram } from './program.js';
export type { TestRunOptions, TestRunResult } from './program.js';
export { BpfMap, atomicAddU64, atomicRaiseU64 } from './map.js';
export type { MapCreateOptions, MapUpdateFlag } from './map.js';
export { tc, xdp, ifNameToIndex, ifIndexToName } from './netlink.js';
export { BpfLink, BPF_LINK_TYPE, BPF_TCX, tcx } from './tcx.js';
export type { TcxAttachOptions, TcxDirection, TcxEntry } from './tcx.js';
export type { TcAttachPoint, TcAttachOptions, TcFilterId, XdpMode, XdpAttachOptions } from './netlink.js';
export { ARPHRD, ethtool, isEthernet, link, linkType, route, linkTypeName, tcFilterCount, tcFilters } from './link.js';
export type { EthtoolFeature, LinkInfo, LinkRef, RouteInfo, TcFilterInfo, VethEnd } from './link.js';
export { isBpffs, lockFile, mountBpffs, netnsCookie, numPossibleCpus, unlockFile } from './system.js';
export { waitForRunningPrograms } from './sync.js';
export { XskSocket, type XskOptions, type XskBatch, type XskStats, type XskFrameCounts } from './xsk.js';
export { BPF_MAP_TYPE, BPF_PROG_TYPE, BPF_MAP_FLAG, TC_ACT, XDP_ACTION } from './constants.js';
export type { BpfMapType, BpfProgType } from './constants.js';
