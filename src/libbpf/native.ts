// Loads the compiled addon and describes its raw interface. Only this layer's own modules use it;
// the public API is the classes and functions re-exported by index.ts.
import { createRequire } from 'node:module';
import { errorFromNative, type NativeErrorInfo } from './errors.js';

export interface NativeProgInfo {
  id: number;
  type: number;
  name: string;
  tag: string;
}

export interface NativeMapInfo {
  id: number;
  type: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface NativeTestRunResult {
  retval: number;
  duration: number;
  data: Buffer;
  ctx?: Buffer;
}

export interface NativeXdpQuery {
  attachMode: number;
  progId: number;
  drvProgId: number;
  skbProgId: number;
  hwProgId: number;
}

export interface NativeLinkRow {
  ifindex: number;
  name: string;
  kind?: string;
  type: number;
  flags: number;
  mtu: number;
  link?: number;
}

export interface NativeRouteRow {
  type: number;
  oif: number;
  prefsrc?: string;
  gateway?: string;
}

export interface NativeVethEnd {
  name: string;
  mtu?: number;
  txQueues?: number;
  rxQueues?: number;
}

export interface NativeTcFilter {
  kind: string;
  priority: number;
  protocol: number;
  handle: number;
  chain: number;
}

export interface NativeEthtoolFeature {
  name: string;
  active: boolean;
  requested: boolean;
  available: boolean;
  fixed: boolean;
}

export interface NativeTcxQuery {
  revision: bigint;
  progIds: number[];
  linkIds: number[];
}

export interface NativeLinkInfo {
  id: number;
  type: number;
  progId: number;
  ifindex?: number;
  attachType?: number;
}

export interface NativeBpfObject {
  name(): string;
  programNames(): string[];
  mapNames(): string[];
  setGlobal(name: string, value: Buffer): void;
  globalInfo(name: string): { section: string; offset: number; size: number } | undefined;
  reuseMap(mapName: string, fd: number): void;
  setMaxEntries(mapName: string, n: number): void;
  load(): void;
  programFd(name: string): number;
  mapFd(name: string): { fd: number; name: string };
  setAutoload(name: string, on: boolean): void;
  close(): void;
}

export interface NativeConstants {
  mapTypes: Record<string, number>;
  progTypes: Record<string, number>;
  mapFlags: Record<string, number>;
  xdp: Record<string, number>;
  update: Record<string, number>;
}

export interface NativeAddon {
  setErrorFactory(f: (info: NativeErrorInfo) => Error): void;
  NativeBpfObject: new (path: string, btfCustomPath?: string) => NativeBpfObject;
  linkObjects(out: string, inputs: string[]): void;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  objGet(path: string): number;
  objPin(label: string, fd: number, path: string): void;
  progFdById(id: number): number;
  mapFdById(id: number): number;
  progInfo(fd: number): NativeProgInfo;
  mapInfo(fd: number): NativeMapInfo;
  progTestRun(
    label: string,
    fd: number,
    data: Buffer,
    repeat: number,
    ctx: Buffer | undefined,
    dataSizeOut: number,
    ctxSizeOut: number,
  ): NativeTestRunResult;
  mapCreate(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, flags: number, innerMapFd: number): number;
  mapLookup(label: string, fd: number, key: Buffer, keySize: number, valueSize: number): Buffer | undefined;
  mapUpdate(label: string, fd: number, key: Buffer, value: Buffer, keySize: number, valueSize: number, flags: number): void;
  mapDelete(label: string, fd: number, key: Buffer, keySize: number): boolean;
  mapKeys(label: string, fd: number, keySize: number, maxEntries: number): Buffer[];
  mapEntries(label: string, fd: number, keySize: number, valueSize: number, maxEntries: number): Array<[Buffer, Buffer]>;
  mapMmap(label: string, fd: number, size: number): Buffer;
  atomicAddU64(buf: Buffer, off: number, delta: bigint): bigint;
  atomicRaiseU64(buf: Buffer, off: number, value: bigint): boolean;
  tcHookCreate(ifindex: number, point: string): boolean;
  tcHookDestroy(ifindex: number): void;
  tcAttach(ifindex: number, point: string, fd: number, handle: number, priority: number, replace: boolean): number;
  tcDetach(ifindex: number, point: string, handle: number, priority: number): void;
  tcQuery(ifindex: number, point: string, handle: number, priority: number): number | undefined;
  xdpAttach(ifindex: number, fd: number, flags: number): void;
  xdpDetach(ifindex: number, flags: number): void;
  xdpQuery(ifindex: number): NativeXdpQuery;
  tcxLinkCreate(
    ifindex: number,
    direction: string,
    progFd: number,
    where: string,
    relativeKind: string,
    relative: number,
    expectedRevision: bigint,
  ): number;
  tcxQuery(ifindex: number, direction: string): NativeTcxQuery;
  tcxSupported(): boolean;
  linkUpdate(label: string, fd: number, progFd: number, oldProgFd: number): void;
  linkDetach(label: string, fd: number): void;
  linkInfo(fd: number): NativeLinkInfo;
  linkFdById(id: number): number;
  ifNameToIndex(name: string): number;
  ifIndexToName(index: number): string | undefined;
  linkList(): NativeLinkRow[];
  linkGet(dev: number | string): NativeLinkRow;
  routeGet(dst: string): NativeRouteRow | null;
  vethCreate(a: NativeVethEnd, b: NativeVethEnd): void;
  linkDelete(dev: number | string): void;
  linkSet(dev: number | string, up: number, mtu: number): void;
  tcFilterList(ifindex: number, point: string): NativeTcFilter[];
  ethtoolFeatures(dev: string): NativeEthtoolFeature[];
  ethtoolSetFeatures(dev: string, names: string[], values: boolean[]): number;
  isBpffs(path: string): boolean;
  mountBpffs(path: string): void;
  numPossibleCpus(): number;
  lockFile(path: string, timeoutMs: number): number;
  netnsCookie(): bigint;
  constants(): NativeConstants;
}

const require = createRequire(import.meta.url);

// Relative to dist/src/libbpf/ after compilation.
export const native = require('../../../build/Release/itm_native.node') as NativeAddon;
native.setErrorFactory(errorFromNative);
